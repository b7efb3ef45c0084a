"""Pipelined writing: layers decoded straight into the archive at predicted offsets, and a
wrong prediction never changes a byte of the result."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard

import hatchway
from hatchway.testing import LayoutBuilder, layer_tar
from hatchway.testing.layout import BuiltLayer
from tests.support import Family, StagingWatch, files_under

pytestmark = pytest.mark.anyio


async def _both_ways(store: Path, names: list[str], tmp_path: Path) -> tuple[bytes, bytes]:
    """The archive into a file (pipelined when it can be) and into a stream (always staged)."""
    await hatchway.save(names, tmp_path / "file.tar", store=store)
    with (tmp_path / "stream.tar").open("wb") as out:
        await hatchway.save(names, out.fileno(), store=store)
    return (tmp_path / "file.tar").read_bytes(), (tmp_path / "stream.tar").read_bytes()


async def test_compressed_local_layers_are_never_staged(family: Family, tmp_path: Path) -> None:
    """Every size is predictable (gzip trailers, zstd headers): the staging area stays empty
    while layers move — they go straight into the archive's temp file."""
    watch = StagingWatch(tmp_path / "stage")
    await hatchway.save(
        ["app", "tools", "busybox"], tmp_path / "o.tar", store=family.root, tmpdir=watch.stage,
        progress=watch,
    )  # fmt: skip
    assert watch.never_staged
    file, stream = await _both_ways(family.root, ["app", "tools", "busybox"], tmp_path)
    assert file == stream


def _multi_member_gzip(builder: LayoutBuilder, tar: bytes) -> BuiltLayer:
    """A gzip blob of two members: its trailer's ISIZE is only the last member's size."""
    half = len(tar) // 2
    stored = gzip.compress(tar[:half], mtime=0) + gzip.compress(tar[half:], mtime=0)
    digest = builder.blob(stored)
    return BuiltLayer(digest, len(stored), hatchway_sha(tar), "gzip", _GZIP_TYPE)


def _multi_frame_zstd(builder: LayoutBuilder, tar: bytes) -> BuiltLayer:
    """A zstd blob of two frames: its first frame header's content size is half the layer."""
    half = len(tar) // 2
    zstd = zstandard.ZstdCompressor()
    stored = zstd.compress(tar[:half]) + zstd.compress(tar[half:])
    digest = builder.blob(stored)
    return BuiltLayer(digest, len(stored), hatchway_sha(tar), "zstd", _ZSTD_TYPE)


_GZIP_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_ZSTD_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"


def hatchway_sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("make", [_multi_member_gzip, _multi_frame_zstd])
async def test_a_wrong_size_prediction_is_caught_and_the_archive_planned_again(
    tmp_path: Path, make: object
) -> None:
    b = LayoutBuilder(tmp_path / "store")
    plain = b.layer({"etc/a": b"a\n"})
    tricky = make(b, layer_tar({"big/file": bytes(range(256)) * 2000}))  # type: ignore[operator]
    b.tag(b.image([plain, tricky]), "tricky:1")
    b.save()
    file, stream = await _both_ways(tmp_path / "store", ["tricky:1"], tmp_path)
    assert file == stream
    leftovers = [p for p in files_under(tmp_path) if p.startswith(".") or "/." in p]
    assert leftovers == []
