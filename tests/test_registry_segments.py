"""Big blobs fetched as several byte ranges at once, from a real registry through the fault
proxy: the archive is byte-identical to one fetched whole, cut ranges resume, a registry that
ignores ``Range`` is read whole and not asked for ranges again, and a consumer that stops
early leaves no descriptor open.  ``SEGMENT_MIN`` is lowered so that the lab's 1.5 MiB layers
are split (the mechanism does not depend on the size).  The bookkeeping that decides where a
blob is cut, and the slots that let extra ranges use only idle connections, are tested on
their own first."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.errors import OutputError
from hatchway.model import Descriptor
from hatchway.transports.registry import client as registry_client
from hatchway.transports.registry.client import RegistryClient
from hatchway.transports.registry.ranges import Slots, Spool
from tests.fault_proxy import FaultProxy, Faults, fault_proxy
from tests.registry_support import Lab, options, save_from_registry

pytestmark = [pytest.mark.anyio]

NAMES = ("hw/big:1", "hw/family-a:1")
PART = 400_000  # the lab's 1.5 MiB layers can be cut down to parts of 200 000 bytes


@pytest.fixture
def proxy(lab: Lab) -> Iterator[FaultProxy]:
    with fault_proxy(lab.registry.port) as p:
        yield p


def _names(proxy: FaultProxy) -> list[str]:
    return [f"docker://{proxy.host}/{n}" for n in NAMES]


async def _whole(proxy: FaultProxy, out: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The archive with every blob fetched in one request."""
    with monkeypatch.context() as m:
        m.setattr(registry_client, "SEGMENT_MIN", 1 << 40)
        return await save_from_registry(_names(proxy), out, options())


async def _whole_and_split(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **faults: object
) -> tuple[bytes, bytes, Faults]:
    """The archive fetched whole, then in ranges with ``faults`` injected (and those)."""
    whole = await _whole(proxy, tmp_path / "whole.tar", monkeypatch)
    monkeypatch.setattr(registry_client, "SEGMENT_MIN", PART)
    injected = proxy.reset(**faults)
    split = await save_from_registry(_names(proxy), tmp_path / "split.tar", options())
    return whole, split, injected


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 10_000),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(0, 3_000))),
)
def test_splitting_keeps_the_parts_tiling_the_blob_and_never_cuts_taken_bytes(
    size: int, steps: list[tuple[bool, int, int]]
) -> None:
    """Any mix of "take n bytes of part i" and "split": the parts stay in order and cover the
    blob exactly, a cut never falls inside bytes already taken, and a split halves the part
    with the most bytes still to come — if it has at least twice the minimum."""
    min_half = 100
    spool = Spool(size)
    for split, index, n in steps:
        parts = spool.parts
        if split:
            widest = max(p.unclaimed for p in parts)
            taken = {(p.start, p.claimed) for p in parts}
            back = spool.split(min_half)
            if widest < 2 * min_half:
                assert back is None and spool.parts == parts
                continue
            assert back is not None and back.claimed == 0
            assert back.end - back.start == widest // 2
            assert {(p.start, p.claimed) for p in spool.parts} == taken | {(back.start, 0)}
        else:
            part = parts[index % len(parts)]
            part.claimed += min(n, part.unclaimed)
        assert spool.parts[0].start == 0 and spool.parts[-1].end == size
        assert all(a.end == b.start for a, b in itertools.pairwise(spool.parts))
        assert all(0 <= p.claimed <= p.end - p.start for p in spool.parts)
        assert all(spool.after(p.start) is p for p in spool.parts)
    assert spool.splittable(min_half) == (max(p.unclaimed for p in spool.parts) >= 2 * min_half)


async def test_a_spare_slot_goes_only_to_nobody_waiting() -> None:
    slots = Slots(1)
    order: list[str] = []
    wanted = True

    async def request(name: str) -> None:
        async with slots.hold():
            order.append(name)
            await anyio.sleep(0.01)

    async def helper() -> None:
        while await slots.spare(lambda: wanted):
            order.append("spare")
            slots.release()
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        async with slots.hold():
            for start in (partial(request, "a"), helper, partial(request, "b")):
                tg.start_soon(start)
                await anyio.sleep(0.005)  # each waits before the next starts
            assert order == []  # everyone waits for the held slot
        await anyio.sleep(0.05)
        # the requests first, in order; the helper only once nobody waits
        assert order[:3] == ["a", "b", "spare"]
        wanted = False
        async with slots.hold():  # a release wakes the helper, which now wants nothing
            pass
    assert slots.in_use == 0


@pytest.mark.peers
async def test_a_blob_fetched_in_ranges_makes_the_same_archive(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, split, faults = await _whole_and_split(proxy, tmp_path, monkeypatch, latency=0.005)
    assert split == whole
    counts = proxy.blob_requests()
    assert max(counts.values()) >= 2  # big layers were cut, while connections were idle
    assert faults.ranged == sum(n for n in counts.values() if n > 1)


@pytest.mark.peers
async def test_cut_ranges_resume_where_they_were_cut(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, split, faults = await _whole_and_split(
        proxy, tmp_path, monkeypatch, drop_after=150_000, drop_times=4
    )
    assert split == whole and faults.dropped == 4


@pytest.mark.peers
async def test_a_registry_that_ignores_range_is_read_whole_and_asked_once(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers of 200 to ranged requests: each range skips to its start in the whole body and
    stops at its end, and once the client has seen one, later big blobs are not split."""
    whole = await _whole(proxy, tmp_path / "whole.tar", monkeypatch)
    monkeypatch.setattr(registry_client, "SEGMENT_MIN", PART)
    proxy.reset(strip_range=True, latency=0.005)
    split = await save_from_registry(
        [f"docker://{proxy.host}/{n}" for n in NAMES], tmp_path / "split.tar", options(), jobs=1
    )
    assert split == whole
    counts = proxy.blob_requests()
    # jobs=1: the first big layer is asked in ranges (all at once, before any answer came
    # back), the others whole.
    first, *others = sorted(counts.values(), reverse=True)
    assert first >= 2 and set(others) == {1}


@pytest.mark.peers
async def test_a_consumer_that_stops_early_leaves_no_spool_or_connection_behind(
    lab: Lab, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_client, "SEGMENT_MIN", PART)
    proxy.reset(latency=0.01, bandwidth=4e6)
    big = lab.images.layers["big1"]
    descriptor = Descriptor(big.media_type, big.digest, big.size)
    client = RegistryClient(proxy.host, options())
    before = _unlinked_files()
    try:
        async with client.open_blob("hw/big", descriptor) as chunks:
            async for _ in chunks:
                if len(_unlinked_files() - before) == 1:  # the spool of the other ranges
                    break  # hang up while the other ranges still arrive
            else:
                raise AssertionError("the blob was never split")
        assert client._slots.in_use == 0  # no range left holding a connection
        with anyio.move_on_after(0.05):  # ... and a cancelled one
            async with client.open_blob("hw/big", descriptor) as chunks:
                async for _ in chunks:
                    pass
        assert client._slots.in_use == 0
    finally:
        await client.aclose()
    assert _unlinked_files() == before


def _unlinked_files() -> set[str]:
    """This process's descriptors open on deleted files (a spool is one)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.endswith(" (deleted)"):
                found.add(f"{fd}:{target}")
    return found


@pytest.mark.peers
async def test_ranges_per_blob_1_fetches_every_blob_in_one_request(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_client, "SEGMENT_MIN", PART)
    faults = proxy.reset()
    await save_from_registry(_names(proxy), tmp_path / "a.tar", options(ranges_per_blob=1))
    assert max(proxy.blob_requests().values()) == 1 and faults.ranged == 0


def test_ranges_per_blob_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ranges_per_blob"):
        options(ranges_per_blob=0)


@pytest.mark.peers
async def test_a_full_temp_directory_is_one_clear_error_and_nothing_is_written(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's disk fills up (injected at its first write: a full disk on demand)."""

    def full(fd: int, data: bytes, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(registry_client, "SEGMENT_MIN", PART)
    monkeypatch.setattr(registry_client, "pwrite_all", full)
    proxy.reset()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputError, match=r"cannot spool a blob's byte ranges in .*No space left"):
        await save_from_registry(_names(proxy), out / "a.tar", options())
    assert list(out.iterdir()) == []
