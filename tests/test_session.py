"""Sessions: operations that share connections and in-flight fetches, and progress as data."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import anyio
import pytest

import hatchway
from tests.fault_proxy import fault_proxy
from tests.registry_support import Lab, options
from tests.support import Family, files_under, fresh_interpreter

pytestmark = pytest.mark.anyio


async def test_progress_stream_delivers_every_event_and_ends_with_the_operation(
    family: Family, tmp_path: Path
) -> None:
    send, receive = hatchway.progress_stream()
    seen: list[hatchway.ProgressEvent] = []

    async def consume() -> None:
        async with receive:
            async for event in receive:  # ends when the save closes its side
                seen.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        result = await hatchway.save(["app", "tools"], tmp_path / "o.tar", store=family.root,
                                     progress=send)  # fmt: skip
    assert isinstance(seen[0], hatchway.CopyStarted)
    assert isinstance(seen[-1], hatchway.CopyFinished)
    written = sum(e.advanced for e in seen if isinstance(e, hatchway.WriteAdvanced))
    assert written == result.bytes_written


async def test_progress_stream_is_closed_when_the_operation_fails(
    family: Family, tmp_path: Path
) -> None:
    send, receive = hatchway.progress_stream()
    with pytest.raises(hatchway.NoSuchImage):
        await hatchway.save(["nope:1"], tmp_path / "o.tar", store=family.root, progress=send)
    with receive, pytest.raises(anyio.EndOfStream):
        receive.receive_nowait()


async def test_a_session_runs_several_saves_and_refuses_work_once_closed(
    family: Family, tmp_path: Path
) -> None:
    session = hatchway.Session(store=family.root)
    async with session:
        first = await session.save(["app:1.0"], tmp_path / "a.tar")
        second = await session.save(["app:1.0"], tmp_path / "b.tar")
        assert first == second
        assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
        assert any(row.name is not None for row in await session.list_images())
    with pytest.raises(hatchway.HatchwayError, match="closed"):
        await session.save(["app:1.0"], tmp_path / "c.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar", "store"]


@pytest.mark.peers
async def test_concurrent_saves_in_one_session_fetch_each_shared_layer_once(
    lab: Lab, tmp_path: Path
) -> None:
    """Two saves running at once need the same base layers: the registry serves each layer
    blob once, and both archives are exactly what a save on its own writes."""
    layers = {layer.digest for layer in lab.images.layers.values()}
    with fault_proxy(lab.registry.port) as proxy:
        first = [f"docker://{proxy.host}/hw/family-a:1", f"docker://{proxy.host}/hw/family-c:1"]
        second = [f"docker://{proxy.host}/hw/family-c:1", f"docker://{proxy.host}/hw/family-b:1"]
        alone_a = await hatchway.save(first, tmp_path / "alone-a.tar", registry=options())
        await hatchway.save(second, tmp_path / "alone-b.tar", registry=options())
        proxy.reset(latency=0.02, bandwidth=4e6)  # slow enough that the two saves overlap
        (tmp_path / "cache").mkdir()
        async with hatchway.Session(registry=options(), tmpdir=tmp_path / "cache") as session:
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.save, first, tmp_path / "a.tar")
                tg.start_soon(session.save, second, tmp_path / "b.tar")
            cache_files = files_under(tmp_path / "cache")
        fetched = Counter({d: n for d, n in proxy.blob_requests().items() if d in layers})
    assert fetched and max(fetched.values()) == 1, fetched
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "alone-a.tar").read_bytes()
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "alone-b.tar").read_bytes()
    assert alone_a.bytes_written == (tmp_path / "a.tar").stat().st_size
    assert cache_files == []  # emptied once no operation runs


@pytest.mark.peers
async def test_a_fetch_cancelled_halfway_is_fetched_again_by_the_operation_waiting_for_it(
    lab: Lab, tmp_path: Path
) -> None:
    """Operation A fetches the layers, B waits for them; A is cancelled halfway: nothing of
    A's partial fetch is published, B fetches the layers itself and writes the right bytes."""
    layers = {la.digest for la in (lab.images.layers[k] for k in ("big1", "big2", "big3"))}
    with fault_proxy(lab.registry.port) as proxy:
        names = [f"docker://{proxy.host}/hw/big:1"]
        await hatchway.save(names, tmp_path / "ref.tar", registry=options())
        proxy.reset(latency=0.01, bandwidth=1.5e6)  # ~1 s per big layer
        (tmp_path / "cache").mkdir()
        session = hatchway.Session(registry=options(), tmpdir=tmp_path / "cache")
        async with session, anyio.create_task_group() as tg:
            a_scope = anyio.CancelScope()
            a_fetching, b_waiting = anyio.Event(), anyio.Event()
            big = {lab.images.layers[k].diff_id for k in ("big1", "big2", "big3")}

            def when(event: anyio.Event, kind: type) -> hatchway.ProgressCallback:
                def progress(e: hatchway.ProgressEvent) -> None:
                    if isinstance(e, kind) and getattr(e, "digest", None) in big | layers:
                        event.set()

                return progress

            async def save_a() -> None:
                with a_scope:
                    await session.save(
                        names, tmp_path / "a.tar", progress=when(a_fetching, hatchway.LayerAdvanced)
                    )

            tg.start_soon(save_a)
            await a_fetching.wait()
            tg.start_soon(
                partial(
                    session.save,
                    names,
                    tmp_path / "b.tar",
                    progress=when(b_waiting, hatchway.LayerStarted),
                )
            )
            await b_waiting.wait()  # B asked for a layer A is still fetching
            a_scope.cancel()
        fetched = {d: n for d, n in proxy.blob_requests().items() if d in layers}
    assert not (tmp_path / "a.tar").exists()
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    assert max(fetched.values()) == 2  # A's cancelled fetch, then B's own
    assert files_under(tmp_path / "cache") == []


@pytest.mark.peers
async def test_a_session_that_does_not_share_fetches_writes_no_cache_copy(
    lab: Lab, tmp_path: Path
) -> None:
    """``share_fetches=False`` (what the one-shot functions use): remote layers go straight
    into the operation, with no copy of them written into the session's cache directory."""
    (tmp_path / "cache").mkdir()
    names = [f"docker://{lab.registry.host}/hw/family-a:1"]
    seen: list[list[str]] = []

    def watch(event: hatchway.ProgressEvent) -> None:
        if isinstance(event, hatchway.LayerDone):
            seen.append(files_under(tmp_path / "cache"))

    for share in (True, False):
        seen.clear()
        async with hatchway.Session(
            registry=options(), tmpdir=tmp_path / "cache", share_fetches=share
        ) as session:
            await session.save(names, tmp_path / f"{share}.tar", progress=watch)
        assert seen and any(seen) is share  # a shared fetch is teed into a cache file
    assert (tmp_path / "True.tar").read_bytes() == (tmp_path / "False.tar").read_bytes()


def test_the_registry_client_imports_what_httpx_would_import_on_the_event_loop() -> None:
    """httpx imports httpcore (and trio, h11) when its first client is made, which would run
    on the event loop and stall it; importing the registry client (done on a worker thread)
    must have imported them already."""
    code = (
        "import sys, hatchway.transports.registry.client as c\n"
        "before = set(sys.modules)\n"
        "c.RegistryClient('example.test', __import__('hatchway').RegistryOptions())\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    assert fresh_interpreter(code) == ["[]"]
