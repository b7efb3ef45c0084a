"""Faults between hatchway and a real registry, injected by a loopback TCP proxy: latency, a
bandwidth cap, connections cut mid-blob, bursts of 503.  Retries and resume recover and the
archive is byte-identical to an undisturbed run; when retries run out the error is clear and
nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway import RetryPolicy
from hatchway.errors import RegistryError
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.registry_support import Lab, Sleeps, options, save_from_registry
from tests.support import files_under

pytestmark = [pytest.mark.anyio, pytest.mark.peers]

NAMES = ("hw/big:1", "hw/family-a:1", "hw/family-b:1", "hw/family-c:1", "hw/oci:1")


@pytest.fixture(scope="module")
def proxy(lab: Lab) -> Iterator[FaultProxy]:
    with fault_proxy(lab.registry.port) as p:
        yield p


@pytest.fixture(scope="module")
def baseline(lab: Lab, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The archive of NAMES through the proxy with no faults (tags name the proxy's port)."""
    import anyio

    out = tmp_path_factory.mktemp("baseline") / "baseline.tar"
    proxy.reset()
    return anyio.run(save_from_registry, _names(proxy), out, options())


def _names(proxy: FaultProxy) -> list[str]:
    return [f"docker://{proxy.host}/{n}" for n in NAMES]


async def test_latency_and_a_bandwidth_cap_change_nothing(
    proxy: FaultProxy, baseline: bytes, tmp_path: Path
) -> None:
    proxy.reset(latency=0.01, bandwidth=8e6)
    raw = await save_from_registry(_names(proxy), tmp_path / "a.tar", options())
    assert raw == baseline


async def test_a_connection_cut_mid_blob_is_resumed_with_range(
    proxy: FaultProxy, baseline: bytes, tmp_path: Path
) -> None:
    faults = proxy.reset(drop_after=400_000, drop_times=3)
    sleeps = Sleeps()
    raw = await save_from_registry(
        _names(proxy), tmp_path / "a.tar", options(retry=RetryPolicy(sleep=sleeps))
    )
    assert raw == baseline
    assert faults.dropped == 3 and faults.ranged == 3
    assert len(sleeps.delays) >= 3
    counts = proxy.blob_requests()
    assert sum(counts.values()) == len(counts) + 3  # each cut: one more request, from the cut


async def test_a_cut_blob_is_refetched_when_the_server_cannot_resume(
    proxy: FaultProxy, baseline: bytes, tmp_path: Path
) -> None:
    faults = proxy.reset(drop_after=400_000, drop_times=2, strip_range=True)
    raw = await save_from_registry(_names(proxy), tmp_path / "a.tar", options())
    assert raw == baseline
    assert faults.dropped == 2


async def test_bursts_of_503_are_retried(
    proxy: FaultProxy, baseline: bytes, tmp_path: Path
) -> None:
    faults = proxy.reset(fail_next=4)
    sleeps = Sleeps()
    raw = await save_from_registry(
        _names(proxy), tmp_path / "a.tar", options(retry=RetryPolicy(sleep=sleeps))
    )
    assert raw == baseline
    assert faults.injected == 4 and len(sleeps.delays) >= 1


async def test_when_503s_outlast_the_retries_the_error_is_clear_and_nothing_is_written(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    faults = proxy.reset(fail_next=10_000)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RegistryError) as info:
        await save_from_registry(
            _names(proxy), out / "a.tar", options(retry=RetryPolicy(retries=3, sleep=Sleeps()))
        )
    error = info.value
    assert error.status == 503 and error.code == "UNAVAILABLE"
    assert error.registry == proxy.host and error.repository in {n.split(":")[0] for n in NAMES}
    assert "injected by the test proxy" in str(error)
    assert files_under(out) == []
    assert faults.injected >= 4


async def test_when_cuts_outlast_the_retries_the_error_is_clear_and_nothing_is_written(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.reset(drop_after=0, drop_times=10_000)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RegistryError, match=r"connection lost|ended after") as info:
        await save_from_registry(
            _names(proxy), out / "a.tar", options(retry=RetryPolicy(retries=2, sleep=Sleeps()))
        )
    assert "blob sha256:" in str(info.value)
    assert files_under(out) == []


async def test_each_shared_blob_is_requested_once_per_save(
    proxy: FaultProxy, baseline: bytes, tmp_path: Path, lab: Lab
) -> None:
    proxy.reset()
    raw = await save_from_registry(_names(proxy), tmp_path / "a.tar", options(), jobs=16)
    assert raw == baseline
    counts = proxy.blob_requests()
    assert counts and set(counts.values()) == {1}
    base = lab.images.layers["base"].digest
    assert counts[base] == 1  # shared by all five images, across five repositories
    manifests = [p for m, p in proxy.faults.requests if "/manifests/" in p]
    assert len(manifests) == len(set(manifests)) == len(NAMES)
