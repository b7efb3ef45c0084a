"""Faults while pushing, injected by the loopback fault proxy in front of a real registry:
uploads cut mid-body (whole and chunked), bursts of 503.  The push retries and ends with the
very images skopeo reads back; when it cannot, it fails clearly and no tag exists."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

import hatchway
from hatchway import PushResult, RegistryError, RetryPolicy
from hatchway.testing import LayoutBuilder
from hatchway.transports.registry import upload
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.peers import Registry, Skopeo
from tests.push_support import read_back, tags_of
from tests.registry_support import Sleeps, options

pytestmark = [pytest.mark.anyio, pytest.mark.peers]

NAMES = ["big:1", "small:1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``big:1``: a base and three 1.5 MB incompressible layers; ``small:1`` shares the base
    and adds an uncompressed layer (compressed on the way)."""
    b = LayoutBuilder(tmp_path_factory.mktemp("faults") / "store")
    base = b.layer({"etc/os-release": b"ID=faults\n"})
    big = [b.layer({f"big/{i}": random.Random(i).randbytes(1_500_000)}) for i in range(3)]
    plain = b.layer({"plain": random.Random(9).randbytes(600_000)}, compression="none")
    b.tag(b.image([base, *big]), "big:1")
    b.tag(b.image([base, plain]), "small:1")
    b.save()
    return b.root


@pytest.fixture(scope="module")
def proxy(push_target: Registry) -> Iterator[FaultProxy]:
    with fault_proxy(push_target.port) as p:
        yield p


async def _push(proxy: FaultProxy, store: Path, prefix: str, **opts: object) -> PushResult:
    return await hatchway.push(
        NAMES, f"{proxy.host}/{prefix}", store=store, registry=options(**opts)
    )


def _check(result: PushResult, skopeo: Skopeo, tmp_path: Path, store: Path) -> None:
    """Every pushed image reads back, verified, with its image ID."""
    assert len(result.images) == 2
    for n, image in enumerate(result.images):
        assert read_back(skopeo, image.name, tmp_path / f"o{n}").image_id == image.id


async def test_an_upload_cut_mid_blob_is_retried(
    proxy: FaultProxy, store: Path, skopeo: Skopeo, prefix: str, tmp_path: Path
) -> None:
    faults = proxy.reset(cut_upload_after=300_000, cut_times=3)
    sleeps = Sleeps()
    result = await _push(proxy, store, prefix, retry=RetryPolicy(sleep=sleeps))
    assert faults.cut == 3 and len(sleeps.delays) >= 3
    # Each cut upload started over with a fresh POST: 3 more than the blobs uploaded.
    starts = proxy.count("POST", "/blobs/uploads/") - proxy.count("POST", "mount=")
    assert starts == result.blobs_uploaded + 3
    _check(result, skopeo, tmp_path, store)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked uploads for the 1.5 MB layers: 512 KiB PATCHes."""
    monkeypatch.setattr(upload, "UPLOAD_MONOLITHIC_MAX", 256 << 10)
    monkeypatch.setattr(upload, "UPLOAD_CHUNK", 512 << 10)


@pytest.mark.usefixtures("small_chunks")
async def test_a_chunk_cut_mid_body_resumes_or_starts_the_upload_over(
    proxy: FaultProxy, store: Path, skopeo: Skopeo, prefix: str, tmp_path: Path
) -> None:
    """After a PATCH broke off, the client asks where the session stands.  distribution
    usually has given the session up by then (its status is unknown) and the upload starts
    over with a new POST; if the question arrives before the registry noticed the break, the
    session still answers with what it holds and the upload resumes there (both happen
    here, about one run in fifteen the second)."""
    faults = proxy.reset(cut_upload_after=200_000, cut_times=2)
    result = await _push(proxy, store, prefix)
    assert faults.cut == 2
    assert proxy.count("PATCH", "/blobs/uploads/") >= 3 * 3  # every big layer in chunks
    assert proxy.count("GET", "/blobs/uploads/") == 2  # each cut: where does it stand?
    starts = proxy.count("POST", "/blobs/uploads/") - proxy.count("POST", "mount=")
    assert result.blobs_uploaded <= starts <= result.blobs_uploaded + 2  # one more per cut at most
    _check(result, skopeo, tmp_path, store)


@pytest.mark.usefixtures("small_chunks")
async def test_a_failed_chunk_resumes_where_the_registry_stands(
    proxy: FaultProxy, store: Path, skopeo: Skopeo, prefix: str, tmp_path: Path
) -> None:
    """A chunk refused before it reached the registry (a 503 from a proxy in between) leaves
    the session intact: the registry reports the bytes it holds and the upload goes on from
    there, in the same session."""
    faults = proxy.reset(fail_next=1, fail_only="PATCH", fail_skip=1)  # the second chunk
    result = await _push(proxy, store, prefix)
    assert faults.injected == 1
    assert proxy.count("GET", "/blobs/uploads/") == 1
    starts = proxy.count("POST", "/blobs/uploads/") - proxy.count("POST", "mount=")
    assert starts == result.blobs_uploaded  # no upload started over
    _check(result, skopeo, tmp_path, store)


async def test_bursts_of_503_while_uploading_are_retried(
    proxy: FaultProxy, store: Path, skopeo: Skopeo, prefix: str, tmp_path: Path
) -> None:
    faults = proxy.reset(fail_next=5)
    result = await _push(proxy, store, prefix)
    assert faults.injected == 5
    _check(result, skopeo, tmp_path, store)


async def test_when_cuts_outlast_the_retries_no_tag_is_written(
    proxy: FaultProxy, push_target: Registry, store: Path, prefix: str
) -> None:
    proxy.reset(cut_upload_after=100_000, cut_times=10_000)
    with pytest.raises(RegistryError) as info:
        await _push(proxy, store, prefix, retry=RetryPolicy(retries=2, sleep=Sleeps()))
    error = info.value
    assert error.registry == proxy.host and "upload of blob sha256:" in str(error)
    assert "connection lost" in str(error) or "gave up" in str(error)
    # Small blobs got in before the big ones failed, but no tag points at anything.
    for repository in ("big", "small"):
        assert tags_of(push_target, f"{prefix}/library/{repository}") == []
    proxy.reset()
    done = await _push(proxy, store, prefix)  # a later push completes what is missing
    assert done.blobs_skipped > 0
    assert tags_of(push_target, f"{prefix}/library/big") == ["1"]


async def test_jobs_bound_the_uploads_and_open_as_many_connections(
    proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    """Each upload holds a connection while its body goes: ``jobs`` above the registry's
    connection limit (8 by default) raise it for the destination; below it, it stays."""
    b = LayoutBuilder(tmp_path / "store")
    layers = [b.layer({f"l/{i}": random.Random(100 + i).randbytes(200_000)}) for i in range(20)]
    b.tag(b.image(layers), "many:1")
    b.save()
    for jobs, label in ((16, "wide"), (4, "narrow")):
        proxy.wait_idle()
        faults = proxy.reset(latency=0.02, bandwidth=1e6)
        await hatchway.push(["many:1"], f"{proxy.host}/{prefix}-{label}", store=b.root,
                            registry=options(), jobs=jobs)  # fmt: skip
        # (The proxy counts a connection until it has closed its side too, so a peak may
        # include one the client let go a moment earlier: no exact bound above the limit.)
        # Plus one: the client's first connection tries TLS (HTTPS first, docs/registry.md) and
        # is replaced by a plain one when the loopback proxy answers in plain HTTP.
        if jobs > 8:
            assert faults.peak_connections > 8 + 1
        else:
            assert faults.peak_connections <= 8 + 1
