"""Failure and cancellation: every phase, every kind of bad store — and nothing is left behind.

"Nothing left" means: no output file, no temp output file, no staging directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import zstandard
from anyio.streams.file import FileWriteStream

import hatchway
from hatchway.errors import StoreError
from hatchway.model import OCI_LAYER
from hatchway.progress import ProgressEvent, WriteAdvanced, WriteStarted
from hatchway.testing.layout import BuiltLayer, LayoutBuilder, layer_tar
from hatchway.transports.layout.source import OCILayoutStore
from tests.support import Family, ProbeStore, files_under
from tests.test_cli import run as run_cli

pytestmark = pytest.mark.anyio


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def outside_store(tmp_path: Path) -> list[str]:
    return [p for p in files_under(tmp_path) if not p.startswith("store")]


async def run_until(
    save: Callable[[anyio.CancelScope], Coroutine[Any, Any, object]], entered: anyio.Event
) -> None:
    """Start ``save``, wait until it reaches the phase under test, then cancel it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(save, tg.cancel_scope)
        await entered.wait()
        tg.cancel_scope.cancel()


async def test_cancel_while_resolving(family: Family, tmp_path: Path) -> None:
    entered = anyio.Event()

    async def block(name: str) -> None:
        entered.set()
        await anyio.sleep_forever()

    store = ProbeStore(OCILayoutStore(family.root), resolve_hook=block)

    async def save(scope: anyio.CancelScope) -> None:
        await hatchway.save(["app", "tools"], tmp_path / "o.tar", store=store)

    await run_until(save, entered)
    assert outside_store(tmp_path) == []


@pytest.mark.parametrize("jobs", [1, 4])
async def test_cancel_while_fetching(family: Family, tmp_path: Path, jobs: int) -> None:
    entered = anyio.Event()
    blocked = 0

    async def block(digest: str) -> None:
        nonlocal blocked
        blocked += 1
        if blocked == 2:  # one layer may already be staged; the next one hangs
            entered.set()
            await anyio.sleep_forever()

    store = ProbeStore(OCILayoutStore(family.root), blob_hook=block, local=False)

    async def save(scope: anyio.CancelScope) -> None:
        await hatchway.save(EVERYTHING, tmp_path / "o.tar", store=store, jobs=jobs)

    await run_until(save, entered)
    assert outside_store(tmp_path) == []


EVERYTHING = ["app", "tools", "busybox", "127.0.0.1:5000/other:v1"]


async def test_cancel_while_serializing(family: Family, tmp_path: Path) -> None:
    entered = anyio.Event()
    scope_box: list[anyio.CancelScope] = []

    def cancel_on_first_write(event: ProgressEvent) -> None:
        if isinstance(event, WriteAdvanced) and not entered.is_set():
            entered.set()
            scope_box[0].cancel()

    async def save(scope: anyio.CancelScope) -> None:
        scope_box.append(scope)
        await hatchway.save(
            EVERYTHING, tmp_path / "o.tar", store=family.root, progress=cancel_on_first_write
        )

    await run_until(save, entered)
    assert entered.is_set()
    assert outside_store(tmp_path) == []


async def test_existing_output_survives_cancellation(family: Family, tmp_path: Path) -> None:
    (tmp_path / "o.tar").write_bytes(b"old")
    entered = anyio.Event()

    async def block(digest: str) -> None:
        entered.set()
        await anyio.sleep_forever()

    store = ProbeStore(OCILayoutStore(family.root), blob_hook=block, local=False)

    async def save(scope: anyio.CancelScope) -> None:
        await hatchway.save(["app"], tmp_path / "o.tar", store=store)

    await run_until(save, entered)
    assert outside_store(tmp_path) == ["o.tar"]
    assert (tmp_path / "o.tar").read_bytes() == b"old"


async def test_failure_mid_fetch_cancels_the_rest(family: Family, tmp_path: Path) -> None:
    calls = 0

    async def fail_third(digest: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError("test store", "connection lost mid-blob")
        await anyio.lowlevel.checkpoint()

    store = ProbeStore(OCILayoutStore(family.root), blob_hook=fail_third, local=False)
    with pytest.raises(StoreError, match="connection lost mid-blob"):
        await hatchway.save(EVERYTHING, tmp_path / "o.tar", store=store, jobs=2)
    assert outside_store(tmp_path) == []


# -- bad stores ------------------------------------------------------------------------


def corrupt_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


async def expect_failure(
    store: Path,
    tmp_path: Path,
    error: type[Exception],
    match: str,
    names: tuple[str, ...] = ("app",),
) -> None:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(error, match=match):
        await hatchway.save(list(names), out / "o.tar", store=store)
    assert files_under(out) == []


async def test_layer_digest_mismatch(family: Family, tmp_path: Path) -> None:
    corrupt_same_size(family.builder.blob_path(family.layers["l2"].digest))  # uncompressed
    await expect_failure(family.root, tmp_path, hatchway.DigestMismatch, "digest mismatch")


async def test_compressed_layer_digest_mismatch(family: Family, tmp_path: Path) -> None:
    path = family.builder.blob_path(family.layers["l4"].digest)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the gzip trailer: still decompresses, digest differs
    path.write_bytes(bytes(data))
    await expect_failure(
        family.root,
        tmp_path,
        hatchway.HatchwayError,
        "l4|digest|gzip|corrupt",
        ("127.0.0.1:5000/other",),
    )


async def test_truncated_blob(family: Family, tmp_path: Path) -> None:
    path = family.builder.blob_path(family.layers["base"].digest)
    path.write_bytes(path.read_bytes()[:-20])
    await expect_failure(family.root, tmp_path, StoreError, "truncated|ends early")


async def test_missing_blob(family: Family, tmp_path: Path) -> None:
    family.builder.blob_path(family.layers["l1"].digest).unlink()
    await expect_failure(family.root, tmp_path, StoreError, "not found")


async def test_missing_config(family: Family, tmp_path: Path) -> None:
    family.builder.blob_path(family.images["app1"].config_digest).unlink()
    await expect_failure(family.root, tmp_path, hatchway.BlobNotFound, "not found")


async def test_corrupt_manifest(family: Family, tmp_path: Path) -> None:
    corrupt_same_size(family.builder.blob_path(family.images["tools"].digest))
    await expect_failure(
        family.root, tmp_path, hatchway.DigestMismatch, "digest mismatch", ("tools",)
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "index.json: not valid JSON"),
        (b'{"manifests": 3}', "manifests is not a list"),
        (
            b'{"manifests": [{"digest": "sha256:00", "size": 1, "mediaType": "x"}]}',
            "invalid digest",
        ),
        (b"[]", "not a JSON object"),
    ],
)
async def test_malformed_index(family: Family, tmp_path: Path, content: bytes, match: str) -> None:
    (family.root / "index.json").write_bytes(content)
    await expect_failure(family.root, tmp_path, StoreError, match)


async def test_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    await expect_failure(tmp_path / "store", tmp_path, StoreError, "oci-layout is missing")


def one_image_store(
    root: Path, mutate: Callable[[LayoutBuilder], None] | None = None, **layer_changes: Any
) -> Path:
    b = LayoutBuilder(root)
    good = b.layer({"a": b"a\n"})
    layer = dataclasses.replace(good, **layer_changes)
    b.tag(b.image([layer]), "app:1")
    b.save()
    if mutate:
        mutate(b)
    return root


async def test_diff_id_that_does_not_match(tmp_path: Path) -> None:
    store = one_image_store(tmp_path / "store", diff_id="sha256:" + "0" * 64)
    await expect_failure(store, tmp_path, hatchway.DigestMismatch, "diff_id")


async def test_unknown_layer_media_type(tmp_path: Path) -> None:
    store = one_image_store(tmp_path / "store", media_type="application/x-mystery")
    await expect_failure(store, tmp_path, hatchway.UnsupportedMediaType, "x-mystery")


async def test_schema1_manifest_is_unsupported(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "store")
    raw = json.dumps({"schemaVersion": 1, "name": "app", "fsLayers": []}).encode()
    digest = b.blob(raw)
    b.entries.append(
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "digest": digest,
            "size": len(raw),
            "annotations": {"io.containerd.image.name": "docker.io/library/app:1"},
        }
    )
    b.save()
    await expect_failure(tmp_path / "store", tmp_path, hatchway.UnsupportedMediaType, "schema 1")


async def test_layer_count_disagreeing_with_config(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "store")
    a, c = b.layer({"a": b"a"}), b.layer({"c": b"c"})
    img = b.image([a])
    manifest = json.loads(b.blob_path(img.digest).read_bytes())
    manifest["layers"].append(c.descriptor())
    raw = json.dumps(manifest).encode()
    b.tag(dataclasses.replace(img, digest=b.blob(raw), size=len(raw)), "app:1")
    b.save()
    await expect_failure(tmp_path / "store", tmp_path, StoreError, "2 layers but config has 1")


# -- only verified bytes reach an output ----------------------------------------------------


@pytest.mark.parametrize("output", ["fd", "stream", "file", "file-pipelined"])
async def test_a_layer_rewritten_after_its_check_never_reaches_the_output(
    family: Family, tmp_path: Path, output: str
) -> None:
    """Item 4: a local uncompressed layer is rewritten (same size, other bytes) by someone
    else once the archive is being written.  stdout and streams get layers copied into the
    staging area and verified there, so they receive exactly the verified bytes; ``-o FILE``
    with uncompressed layers and a layer whose size cannot be predicted (so nothing is
    pipelined) verifies adopted layers in the copy pass, so it fails and keeps nothing;
    ``-o FILE`` pipelined (always, for layers kept as stored) has the layer verified and in
    place before writing starts.  Never mismatched bytes."""
    b = family.builder
    tar = layer_tar({"opaque/size": b"no content size in this frame\n" * 100})
    stored = zstandard.ZstdCompressor(write_content_size=False).compress(tar)
    unpredictable = BuiltLayer(
        b.blob(stored), len(stored), sha256_of(tar), "zstd", OCI_LAYER + "+zstd"
    )
    b.tag(b.image([family.layers["l2"], unpredictable]), "mixed:1")
    b.save()
    name = "app:2.0" if output == "file-pipelined" else "mixed:1"
    expected = tmp_path / "expected.tar"
    uncompressed = output == "file"
    await hatchway.save([name], expected, store=family.root, uncompressed_layers=uncompressed)
    layer = family.builder.blob_path(family.layers["l2"].digest)  # uncompressed
    rewritten: list[bool] = []

    def rewrite_when_writing(event: ProgressEvent) -> None:
        if isinstance(event, WriteStarted) and not rewritten:
            corrupt_same_size(layer)
            rewritten.append(True)

    got = tmp_path / "got.tar"
    if output == "file":
        with pytest.raises(hatchway.DigestMismatch):
            await hatchway.save(
                [name],
                got,
                store=family.root,
                progress=rewrite_when_writing,
                uncompressed_layers=uncompressed,
            )
        assert not got.exists() and outside_store(tmp_path) == ["expected.tar"]
    elif output == "file-pipelined":
        await hatchway.save([name], got, store=family.root, progress=rewrite_when_writing)
        assert got.read_bytes() == expected.read_bytes()
    elif output == "fd":
        fd = os.open(got, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            await hatchway.save([name], fd, store=family.root, progress=rewrite_when_writing)
        finally:
            os.close(fd)
        assert got.read_bytes() == expected.read_bytes()
    else:
        async with await FileWriteStream.from_path(got) as stream:
            await hatchway.save([name], stream, store=family.root, progress=rewrite_when_writing)
        assert got.read_bytes() == expected.read_bytes()
    assert rewritten


def test_stdout_gets_verified_bytes_or_nothing_while_the_store_changes(
    family: Family, tmp_path: Path
) -> None:
    """Item 4 through the CLI, with another thread flipping an uncompressed layer between
    its true bytes and corrupt ones as fast as it can: every save to stdout either exits 0
    with exactly the verified archive or exits 1 with nothing on stdout."""
    expected = run_cli("save", "--store", str(family.root), "app:2.0")
    assert expected.returncode == 0
    layer = family.builder.blob_path(family.layers["l2"].digest)
    good = layer.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for data in (bytes(bad), good):
                layer.write_bytes(data)

    flipper = threading.Thread(target=flip)
    flipper.start()
    outcomes = set()
    try:
        for _ in range(8):
            result = run_cli("save", "--store", str(family.root), "app:2.0")
            if result.returncode == 0:
                assert result.stdout == expected.stdout
            else:
                assert result.returncode == 1 and result.stdout == b"", result.stderr
            outcomes.add(result.returncode)
    finally:
        stop.set()
        flipper.join()
    assert outcomes  # (which outcomes occur depends on timing; both are correct)


async def test_an_archive_inside_the_store_it_reads_is_refused(family: Family) -> None:
    """``-o`` naming a file of the store (its index, a blob) would replace it with the tar."""
    index = family.root / "index.json"
    before = index.read_bytes()
    for target in (index, family.root / "blobs" / "sha256" / "new.tar"):
        with pytest.raises(hatchway.OutputError, match=r"inside .*which this save reads"):
            await hatchway.save(["app:1.0"], target, store=family.root)
    link = family.root.parent / "link.tar"
    link.symlink_to(index)
    with pytest.raises(hatchway.OutputError, match="inside"):
        await hatchway.save(["app:1.0"], link, store=family.root)
    assert index.read_bytes() == before
    assert not (family.root / "blobs" / "sha256" / "new.tar").exists()
    # Beside the store, or from an archive only, it is an ordinary output.
    await hatchway.save(["app:1.0"], family.root.parent / "beside.tar", store=family.root)


async def test_a_symlink_loop_as_output_is_an_output_error(tmp_path: Path, family: Family) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(hatchway.OutputError, match="symbolic links"):
        await hatchway.save(["app:1.0"], tmp_path / "a", store=family.root)


async def test_a_fifo_nobody_reads_does_not_hold_cancellation(
    family: Family, tmp_path: Path
) -> None:
    """Opening a FIFO for writing waits for a reader; that wait is cancellable, and what
    the save staged is removed."""
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "pipe"
    os.mkfifo(fifo)
    with anyio.move_on_after(0.5) as scope:
        await hatchway.save(["app:1.0"], fifo, store=family.root, tmpdir=out)
    assert scope.cancelled_caught
    assert sorted(p.name for p in out.iterdir()) == ["pipe"]


def _nested_store(root: Path, depth: int) -> LayoutBuilder:
    """A store whose ``nest:1`` is an arm64 and an amd64 image behind ``depth`` indexes."""
    b = LayoutBuilder(root)
    amd = b.image([b.layer({"amd": b"64"})], architecture="amd64")
    arm = b.image([b.layer({"arm": b"64"})], architecture="arm64")
    top = b.index([amd, arm])
    for _ in range(depth - 1):
        top = b.index([top])  # listed without a platform, as the spec allows
    b.tag(top, "nest:1")
    b.save()
    return b


async def test_indexes_inside_indexes_lead_to_the_platform_image(tmp_path: Path) -> None:
    """save and load read a nested index as verify does (it once said: no image for
    linux/amd64 (it has: linux/amd64))."""
    root = tmp_path / "store"
    _nested_store(root, depth=3)
    out = tmp_path / "o.tar"
    await hatchway.save(["nest:1"], out, store=root, platform="linux/arm64")
    assert (await hatchway.verify(out)).ok
    with pytest.raises(hatchway.PlatformNotFound, match=r"it has: linux/amd64, linux/arm64\)"):
        await hatchway.save(["nest:1"], tmp_path / "no.tar", store=root, platform="linux/s390x")


async def test_indexes_nested_without_end_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _nested_store(root, depth=10)
    with pytest.raises(hatchway.StoreError, match="indexes nested over 8 deep"):
        await hatchway.save(["nest:1"], tmp_path / "o.tar", store=root)


@pytest.mark.parametrize("jobs", [0, -1, 1.5, "4", None, True])
async def test_a_wrong_number_of_jobs_is_an_error_before_any_work(
    family: Family, tmp_path: Path, jobs: object
) -> None:
    out = tmp_path / "o.tar"
    with pytest.raises(hatchway.HatchwayError, match="jobs must be a whole number of at least 1"):
        await hatchway.save(["app:1.0"], out, store=family.root, jobs=jobs)  # type: ignore[arg-type]
    with pytest.raises(hatchway.HatchwayError, match="jobs must be"):
        await hatchway.verify(out, jobs=jobs)  # type: ignore[arg-type]
    assert not out.exists()


async def test_an_unknown_format_is_an_error_naming_the_known_ones(
    family: Family, tmp_path: Path
) -> None:
    with pytest.raises(hatchway.HatchwayError, match=r"'bogus' \(docker, docker-1.10, docker-"):
        await hatchway.save(["app:1.0"], tmp_path / "o.tar", store=family.root, format="bogus")


@pytest.mark.parametrize("output", [b"/tmp/o.tar", None, True, 3.5])
async def test_an_output_of_the_wrong_type_is_refused_before_any_fetch(
    family: Family, output: object
) -> None:
    """``True`` would have been fd 1, bytes or ``None`` a stream that fails once all is done."""
    fetched: list[object] = []
    with pytest.raises(TypeError, match="output must be a path, a file descriptor or a byte"):
        await hatchway.save(["app:1.0"], output, store=family.root, progress=fetched.append)  # type: ignore[arg-type]
    assert fetched == []


async def test_a_store_entry_pull_stored_for_one_platform_is_checked_against_another(
    tmp_path: Path,
) -> None:
    """``pull`` records the platform it picked on the store's entry; a save that asks for
    another platform must still check the image's config (it wrote amd64 for arm64)."""
    b = LayoutBuilder(tmp_path / "store")
    b.tag(b.image([b.layer({"a": b"1"})], architecture="amd64"), "pulled:1")
    b.entries[-1]["platform"] = {"architecture": "amd64", "os": "linux"}
    b.save()
    with pytest.raises(hatchway.PlatformNotFound, match=r"linux/arm64 \(it has: linux/amd64\)"):
        await hatchway.save(["pulled:1"], tmp_path / "o.tar", store=b.root, platform="linux/arm64")
    assert not (tmp_path / "o.tar").exists()
    await hatchway.save(["pulled:1"], tmp_path / "o.tar", store=b.root, platform="linux/amd64")


async def test_a_killed_copy_s_temp_files_are_removed_by_a_later_one(
    family: Family, tmp_path: Path
) -> None:
    """SIGKILL leaves a load's or pull's partial blob in ``blobs/sha256``; the next copy into
    the store removes those untouched for an hour, never one a live copy is writing."""
    archive = tmp_path / "a.tar"
    await hatchway.save(["app:1.0"], archive, store=family.root)
    store = tmp_path / "loaded"
    await hatchway.load([archive], store=store)
    blobs = store / "blobs" / "sha256"
    stale, fresh, old_index = (
        blobs / ".blob-killed.hatchway-tmp",
        blobs / ".blob-live.hatchway-tmp",
        store / ".index.json.killed.hatchway-tmp",
    )
    for path in (stale, fresh, old_index):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (stale, old_index):
        os.utime(path, (two_hours_ago, two_hours_ago))
    await hatchway.load([archive], store=store)
    assert not stale.exists() and not old_index.exists()
    assert fresh.exists()
