"""The engine: ancestry and dedup, exactly-once fetches, determinism, streams and progress."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import hatchway
from hatchway.decode import LayerDecoder
from hatchway.engine import copy as copy_module
from hatchway.model import hex_of
from hatchway.progress import (
    CopyFinished,
    CopyStarted,
    LayerDone,
    LayerStarted,
    ProgressEvent,
    WriteAdvanced,
    WriteStarted,
)
from hatchway.testing import LayoutBuilder
from hatchway.testing.slow import SlowStore
from hatchway.transports.layout.source import OCILayoutStore
from tests.support import Family, ProbeStore, files_under, read_archive, uncompressed

pytestmark = pytest.mark.anyio

EVERYTHING = ["app", "tools", "busybox", "127.0.0.1:5000/other:v1", "multi"]


async def test_every_member_once_and_every_manifest_complete(
    family: Family, tmp_path: Path
) -> None:
    for fmt in hatchway.ArchiveFormat:
        out = tmp_path / f"{fmt.value}.tar"
        await hatchway.save(EVERYTHING, out, store=family.root, format=fmt)
        archive = read_archive(out.read_bytes())
        assert len(archive.names) == len(set(archive.names)), fmt
        layer_bodies = [
            hashlib.sha256(data).hexdigest()
            for name, data in archive.data.items()
            if name.endswith("layer.tar") or (name.startswith("blobs/") and len(data) >= 10240)
        ]
        assert len(layer_bodies) == len(set(layer_bodies)), f"{fmt}: a layer stored twice"
        if fmt is hatchway.ArchiveFormat.DOCKER_LEGACY:
            continue
        for entry in archive.json("manifest.json"):
            config = archive.json(entry["Config"])
            # our own check: a config's file name is its sha256 (no loader checks it)
            digest = hashlib.sha256(archive.data[entry["Config"]]).hexdigest()
            assert entry["Config"].removeprefix("blobs/sha256/").removesuffix(".json") == digest
            assert len(entry["Layers"]) == len(config["rootfs"]["diff_ids"])
            for path, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"], strict=True):
                data = archive.data.get(path)
                if data is None:  # a symlink to the stored copy
                    link = archive.member(path)
                    target = str(Path(path).parent.parent / link.linkname.removeprefix("../"))
                    data = archive.data[target]
                if path.startswith("blobs/sha256/"):  # a blob is named after its digest
                    assert hashlib.sha256(data).hexdigest() == path.removeprefix("blobs/sha256/")
                assert "sha256:" + hashlib.sha256(uncompressed(data)).hexdigest() == diff_id


@pytest.mark.parametrize("jobs", [1, 4, 16])
@pytest.mark.parametrize("local", [True, False], ids=["local-files", "streamed"])
async def test_each_shared_blob_is_read_once(
    family: Family, tmp_path: Path, jobs: int, local: bool
) -> None:
    probe = ProbeStore(OCILayoutStore(family.root), local=local)
    names = [*EVERYTHING, "app:1.0", hex_of(family.images["app2"].config_digest)]
    await hatchway.save(names, tmp_path / "o.tar", store=probe, jobs=jobs)
    wanted = {family.layers[k].digest for k in ("base", "l1", "l2", "l3", "l4", "base2", "amd")}
    assert probe.reads == dict.fromkeys(wanted, 1)


async def test_identical_bytes_at_every_jobs_and_fetch_timing(
    family: Family, tmp_path: Path
) -> None:
    reference = tmp_path / "ref.tar"
    await hatchway.save(EVERYTHING, reference, store=family.root, jobs=1)
    expected = reference.read_bytes()
    for seed, jobs in [(1, 2), (2, 4), (3, 16), (4, 16)]:
        rng = random.Random(seed)

        async def jitter(digest: str, rng: random.Random = rng) -> None:
            await anyio.sleep(rng.random() * 0.02)

        probe = ProbeStore(OCILayoutStore(family.root), blob_hook=jitter, local=seed % 2 == 0)
        out = tmp_path / f"{seed}.tar"
        await hatchway.save(EVERYTHING, out, store=probe, jobs=jobs)
        assert out.read_bytes() == expected, f"seed {seed} jobs {jobs}"


async def test_save_to_a_byte_stream_matches_the_file(family: Family, tmp_path: Path) -> None:
    await hatchway.save(["app"], tmp_path / "o.tar", store=family.root)
    send, receive = anyio.create_memory_object_stream[bytes](1)
    from anyio.streams.stapled import StapledObjectStream  # noqa: F401 - documented pairing

    chunks: list[bytes] = []

    async def collect() -> None:
        async with receive:
            async for chunk in receive:
                chunks.append(chunk)

    class Sender(anyio.abc.ByteSendStream):
        async def send(self, item: bytes) -> None:
            await send.send(item)

        async def send_eof(self) -> None:
            await send.aclose()

        async def aclose(self) -> None:
            await send.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        async with Sender() as stream:
            result = await hatchway.save(["app"], stream, store=family.root)
    assert b"".join(chunks) == (tmp_path / "o.tar").read_bytes()
    assert result.bytes_written == len(b"".join(chunks))
    assert max(len(c) for c in chunks) <= 2 << 20


async def test_progress_events_add_up(family: Family, tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    result = await hatchway.save(
        EVERYTHING, tmp_path / "o.tar", store=family.root, progress=events.append
    )
    started = [e for e in events if isinstance(e, CopyStarted)]
    assert len(started) == 1
    assert started[0].layers == len({e.digest for e in events if isinstance(e, LayerStarted)})
    assert started[0].layers == len([e for e in events if isinstance(e, LayerDone)])
    write = next(e for e in events if isinstance(e, WriteStarted))
    assert write.total == result.bytes_written == (tmp_path / "o.tar").stat().st_size
    assert sum(e.advanced for e in events if isinstance(e, WriteAdvanced)) == write.total
    finished = events[-1]
    assert isinstance(finished, CopyFinished)
    assert 0 < finished.blobs_fetched <= started[0].layers
    assert 0 < finished.bytes_fetched <= started[0].fetch_bytes


async def test_stream_output_receives_only_verified_bytes(family: Family, tmp_path: Path) -> None:
    """A stream cannot take bytes back: every layer is verified before writing starts."""
    events: list[ProgressEvent] = []
    with (tmp_path / "o.tar").open("wb") as out:
        await hatchway.save(EVERYTHING, out.fileno(), store=family.root, progress=events.append)
    write = next(i for i, e in enumerate(events) if isinstance(e, WriteStarted))
    assert all(not isinstance(e, LayerDone | LayerStarted) for e in events[write:])
    assert len([e for e in events[:write] if isinstance(e, LayerDone)]) == 7


async def test_staging_area_is_removed_and_tmpdir_honoured(family: Family, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    seen: list[list[str]] = []

    def watch(event: ProgressEvent) -> None:
        if isinstance(event, WriteStarted):
            seen.append(files_under(stage))

    out = tmp_path / "out"
    out.mkdir()
    await hatchway.save(["app"], out / "o.tar", store=family.root, tmpdir=stage, progress=watch)
    assert seen and seen[0] and seen[0][0].startswith(".hatchway-staging-")
    assert files_under(stage) == []
    assert files_under(out) == ["o.tar"]


async def test_output_mode_follows_umask(family: Family, tmp_path: Path) -> None:
    await hatchway.save(["app:1.0"], tmp_path / "o.tar", store=family.root)
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "o.tar").stat().st_mode & 0o777 == 0o666 & ~mask


class _Overlap:
    """Wraps a blocking function to record how many threads ran it at once."""

    def __init__(self, function: Any) -> None:
        self._function = function
        self._lock = threading.Lock()
        self._running = 0
        self.most = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        try:
            time.sleep(0.01)  # long enough for the others to start, if they may
            return self._function(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1


async def test_layers_decode_on_at_most_decode_threads_threads(
    family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight fetches at once share two decoding threads (DECODE_THREADS on two cores): each
    feed waits for a thread, whatever ``jobs`` is."""
    monkeypatch.setattr(copy_module, "DECODE_THREADS", 2)
    overlap = _Overlap(LayerDecoder.feed)
    monkeypatch.setattr(LayerDecoder, "feed", lambda self, chunk: overlap(self, chunk))
    store = SlowStore(OCILayoutStore(family.root), latency=0.0)  # streamed, not local files
    await hatchway.save(EVERYTHING, tmp_path / "a.tar", store=store, jobs=8)
    assert overlap.most == 2


async def test_batches_of_small_layers_run_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = LayoutBuilder(tmp_path / "store")
    for i in range(4):  # 80 tiny layers: several batches of SMALL_BATCH
        layers = [b.layer({f"i{i}/l{k}": b"%d %d\n" % (i, k)}) for k in range(20)]
        b.tag(b.image(layers), f"many/img{i}:1")
    b.save()
    overlap = _Overlap(copy_module._decode_batch)
    monkeypatch.setattr(copy_module, "_decode_batch", overlap)
    names = [f"many/img{i}:1" for i in range(4)]
    await hatchway.save(names, tmp_path / "a.tar", store=tmp_path / "store", jobs=8)
    assert overlap.most == 1


async def test_a_big_gzip_layer_alone_decodes_in_split_steps_to_the_same_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a decoding thread to spare, a big local gzip layer's steps run split (inflate
    here, hash and write on a helper); the archive is the one an unsplit save writes."""
    b = LayoutBuilder(tmp_path / "store")
    noise = random.Random(7).randbytes(3 << 20)  # stays > SMALL_BLOB once gzipped
    b.tag(b.image([b.layer({"big": noise})]), "big:1")
    b.save()
    split = _Overlap(LayerDecoder._feed_split)
    monkeypatch.setattr(LayerDecoder, "_feed_split", lambda self, *a: split(self, *a))
    outputs = {}
    for threads in (1, 2):  # one thread: never a spare one
        monkeypatch.setattr(copy_module, "DECODE_THREADS", threads)
        out = tmp_path / f"{threads}.tar"
        await hatchway.save(["big:1"], out, store=tmp_path / "store")
        outputs[threads] = out.read_bytes()
        assert (split.most > 0) is (threads == 2)
    assert outputs[1] == outputs[2]
