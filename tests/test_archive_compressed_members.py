"""A docker archive's layer member may be gzip or zstd: nothing then names its digest (it is
whatever the member hashes to), so its content is checked when the archive is read — against
the config's diffID, and for a stream that ends early or carries trailing garbage.  A load
must never store a layer that a later save refuses."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard

import hatchway
from tests.archive_support import members, rewrite, save
from tests.support import Family

pytestmark = pytest.mark.anyio


def _layers(archive: Path) -> list[str]:
    return [str(name) for name in json.loads(members(archive)["manifest.json"])[0]["Layers"]]


def _compress_layer(archive: Path, out: Path, change: object) -> Path:
    """``archive`` with its image's first layer member replaced by ``change(layers)``."""
    first, *_ = names = _layers(archive)

    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        files[first] = change([files[n] for n in names])  # type: ignore[operator]
        return files

    return rewrite(archive, out, edit)


def _index_entries(store: Path) -> list[object]:
    index = store / "index.json"
    return json.loads(index.read_text())["manifests"] if index.exists() else []


async def test_a_compressed_member_with_the_right_content_loads_and_saves_again(
    family: Family, tmp_path: Path
) -> None:
    archive = await save(family, tmp_path / "a.tar", ["app:1.0"], format="docker-1.10")
    packed = _compress_layer(archive, tmp_path / "gz.tar", lambda ls: gzip.compress(ls[0]))
    store = tmp_path / "loaded"
    await hatchway.load([packed], store=store)
    await hatchway.save(["app:1.0"], tmp_path / "again.tar", store=store)


@pytest.mark.parametrize(
    ("case", "change", "message"),
    [
        ("other-content", lambda ls: gzip.compress(ls[1]), "config diff_id"),
        ("other-content-zstd", lambda ls: zstandard.compress(ls[1]), "config diff_id"),
        ("truncated", lambda ls: gzip.compress(ls[0])[:-12], "ends early"),
        ("trailing-garbage", lambda ls: gzip.compress(ls[0]) + b"junk", "trailing garbage"),
    ],
)
async def test_a_compressed_member_that_does_not_hold_the_layer_is_refused(
    family: Family, tmp_path: Path, case: str, change: object, message: str
) -> None:
    archive = await save(family, tmp_path / "a.tar", ["app:1.0"], format="docker-1.10")
    bad = _compress_layer(archive, tmp_path / f"{case}.tar", change)
    store = tmp_path / "loaded"
    with pytest.raises(hatchway.HatchwayError, match=message):
        await hatchway.load([bad], store=store)
    assert _index_entries(store) == []
    report = await hatchway.verify(bad)
    assert not report.ok and message in (report.problem or "")
    with pytest.raises(hatchway.HatchwayError, match=message):
        await hatchway.save([f"docker-archive:{bad}"], tmp_path / "o.tar")
    assert not (tmp_path / "o.tar").exists()


async def test_a_legacy_layer_that_is_a_broken_gzip_stream_is_refused(
    family: Family, tmp_path: Path
) -> None:
    """A legacy archive has no diffIDs: they are computed from the layers, so a gzip stream
    that ends early would otherwise become the image's own (wrong) content."""
    archive = await save(family, tmp_path / "a.tar", ["app:1.0"], format="docker-legacy")
    layer = next(name for name in members(archive) if name.endswith("/layer.tar"))

    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        files[layer] = gzip.compress(files[layer])[:-12]
        return files

    bad = rewrite(archive, tmp_path / "bad.tar", edit)
    store = tmp_path / "loaded"
    with pytest.raises(hatchway.HatchwayError, match="ends early"):
        await hatchway.load([bad], store=store)
    assert _index_entries(store) == []
