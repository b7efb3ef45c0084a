"""Concurrency under a slow store, measured on trio's virtual clock (no timed assertions):
with ``--jobs 8`` the per-blob latencies overlap, with ``--jobs 1`` they add up; every blob
is still fetched exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import hatchway
from hatchway.testing.slow import CountingStore, SlowStore
from hatchway.transports.layout.source import OCILayoutStore
from tests.support import Family

NAMES = ["app", "tools", "busybox", "127.0.0.1:5000/other:v1"]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps only once every task has been blocked for 1 real second:
    a task waiting for a worker thread is busy, not idle, and must not let time jump."""
    return trio.testing.MockClock(autojump_threshold=1.0)


LATENCY = 10.0  # virtual seconds before each blob's first byte
BLOBS = 6  # distinct layers of NAMES


@pytest.mark.trio
async def test_latencies_overlap_with_jobs(
    family: Family, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    elapsed = {}
    outputs = {}
    for jobs in (1, 8):
        store = CountingStore(
            SlowStore(OCILayoutStore(family.root), latency=LATENCY, bandwidth=None)
        )
        out = tmp_path / f"{jobs}.tar"
        start = trio.current_time()
        await hatchway.save(NAMES, out, store=store, jobs=jobs)
        elapsed[jobs] = trio.current_time() - start
        assert sorted(store.opens.values()) == [1] * BLOBS
        outputs[jobs] = out.read_bytes()
    assert elapsed[1] >= BLOBS * LATENCY
    assert elapsed[8] < 2 * LATENCY
    assert outputs[1] == outputs[8]


@pytest.mark.trio
async def test_bandwidth_cap_paces_each_stream(
    family: Family, tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    store = SlowStore(OCILayoutStore(family.root), latency=0.0, bandwidth=1000.0)
    start = trio.current_time()
    await hatchway.save(["app:2.0"], tmp_path / "o.tar", store=store, jobs=1)
    stored = sum((family.layers[k].size for k in ("base", "l1", "l2")), start=0)
    assert trio.current_time() - start >= stored / 1000.0 * 0.9
