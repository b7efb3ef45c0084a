"""Archive sources at their edges: streamed instead of read as files, compressed members,
links, malformed documents, and the checks that name what is wrong."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

import hatchway
from hatchway.testing import CountingStore, SlowStore
from hatchway.testing.layout import LayoutBuilder
from hatchway.transports.archive.source import ArchiveStore
from tests.archive_support import first_layer, json_edit, members, rewrite, save
from tests.support import Family, files_under

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["docker-archive", "oci-archive", "oci"])
async def test_blobs_stream_when_files_are_hidden(
    family: Family, tmp_path: Path, kind: str
) -> None:
    """Through SlowStore (no local files) every layer is streamed with open_blob, once."""
    bundle = await save(family, tmp_path / "b.tar.zst", ["app", "tools"])
    name = {
        "docker-archive": f"docker-archive:{bundle}",
        "oci-archive": f"oci-archive:{bundle}",
        "oci": f"oci:{family.root}:app:2.0",
    }[kind]
    direct = tmp_path / "direct.tar"
    await hatchway.save([name], direct)
    archives = ArchiveStore(tmp_path)
    store = CountingStore(SlowStore(archives, latency=0))
    streamed = tmp_path / "streamed.tar"
    try:
        await hatchway.save([name], streamed, store=store)
    finally:
        await store.aclose()
    assert streamed.read_bytes() == direct.read_bytes()
    assert store.opens and max(store.opens.values()) == 1
    assert not [p for p in files_under(tmp_path) if ".hatchway" in p]


def _gzip_member(src: Path, dst: Path, name: str) -> Path:
    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        files[name] = gzip.compress(files[name], mtime=0)
        return files

    return rewrite(src, dst, edit)


@pytest.mark.parametrize("fmt", ["docker-1.10", "docker-legacy"])
async def test_compressed_layer_members(family: Family, tmp_path: Path, fmt: str) -> None:
    """A layer stored gzip inside the archive is recognised by its bytes, decompressed and
    verified against the diffID; the images keep their IDs."""
    plain = await save(family, tmp_path / "plain.tar", ["app:2.0"], format=fmt)
    if fmt == "docker-legacy":
        top = json.loads(members(plain)["repositories"])["app"]["2.0"]
        layer = f"{top}/layer.tar"
    else:
        layer = first_layer(plain)
    packed = _gzip_member(plain, tmp_path / "packed.tar", layer)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    # Decompressed on the way, the gzip member gives the very archive the plain one gives.
    await hatchway.save([f"docker-archive:{plain}"], a, uncompressed_layers=True)
    await hatchway.save([f"docker-archive:{packed}"], b, uncompressed_layers=True)
    assert a.read_bytes() == b.read_bytes()
    report = await hatchway.verify(packed)
    assert report.ok, report.problem
    store = tmp_path / "s"
    loaded = await hatchway.load([packed], store=store)
    assert loaded.blobs_stored == 3


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (b"not json", "not valid JSON"),
        (b"{}", "not a JSON array"),
        (b"[1]", "not an object"),
        (b'[{"Config": 1, "Layers": []}]', "needs Config, Layers and RepoTags"),
        (b'[{"Config": "x", "Layers": [], "RepoTags": ["BAD:x"]}]', "member x is missing"),
        # Deep enough to overflow Python's parser: malformed, not an internal RecursionError.
        (b"[" * 100_000 + b"]" * 100_000, "manifest.json: JSON nested too deeply"),
    ],
)
async def test_malformed_manifest_json(
    family: Family, tmp_path: Path, manifest: bytes, words: str
) -> None:
    good = await save(family, tmp_path / "g.tar", ["tools"], format="docker-1.10")

    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        files["manifest.json"] = manifest
        return files

    bad = rewrite(good, tmp_path / "bad.tar", edit)
    report = await hatchway.verify(bad)
    assert not report.ok and words in (report.problem or ""), report.problem
    with pytest.raises(hatchway.StoreError, match=words):
        await hatchway.load([bad], store=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(hatchway.StoreError, match=words):
        await hatchway.save([f"docker-archive:{bad}"], tmp_path / "o.tar")
    assert not (tmp_path / "o.tar").exists()


async def test_bad_repo_tags(family: Family, tmp_path: Path) -> None:
    good = await save(family, tmp_path / "g.tar", ["tools"], format="docker-1.10")
    bad = rewrite(
        good,
        tmp_path / "bad.tar",
        json_edit("manifest.json", lambda d: [{**d[0], "RepoTags": ["NOT/Valid"]}]),  # type: ignore[index]
    )
    with pytest.raises(hatchway.StoreError, match=r"manifest\.json: invalid reference"):
        await hatchway.save([f"docker-archive:{bad}"], tmp_path / "o.tar")


async def test_malformed_legacy(family: Family, tmp_path: Path) -> None:
    good = await save(family, tmp_path / "g.tar", ["tools"], format="docker-legacy")
    cases = {
        "repositories": (b"[]", "not a JSON object"),
    }
    for name, (data, words) in cases.items():

        def edit(files: dict[str, bytes], name: str = name, data: bytes = data) -> dict[str, bytes]:
            files[name] = data
            return files

        bad = rewrite(good, tmp_path / "bad.tar", edit)
        report = await hatchway.verify(bad)
        assert not report.ok and words in (report.problem or ""), report.problem
    bad_tags = rewrite(
        good, tmp_path / "t.tar", json_edit("repositories", lambda r: {"tools": "x"})
    )
    report = await hatchway.verify(bad_tags)
    assert not report.ok and "not a tag map" in (report.problem or "")


@pytest.mark.parametrize(
    ("key", "value"), [("container_config", "x"), ("container_config", ["Cmd"]), ("config", 1)]
)
async def test_legacy_v1_fields_of_the_wrong_type(
    family: Family, tmp_path: Path, key: str, value: object
) -> None:
    """A v1 ``json`` whose ``container_config`` or ``config`` is not an object is malformed:
    Docker's legacy loader decodes both into ``container.Config`` and refuses the image, so
    hatchway names the member instead of ignoring the field (it was an internal error)."""
    good = await save(family, tmp_path / "g.tar", ["tools"], format="docker-legacy")
    top = json.loads(members(good)["repositories"])["tools"]["latest"]
    where = f"{top}/json"
    bad = rewrite(good, tmp_path / "bad.tar", json_edit(where, lambda d: {**d, key: value}))  # type: ignore[dict-item]
    report = await hatchway.verify(bad)
    assert not report.ok and report.member == where, report.problem
    assert f"{key} is not an object" in (report.problem or "")
    with pytest.raises(hatchway.StoreError, match=f"member {where}: {key} is not an object"):
        await hatchway.load([bad], store=tmp_path / "s")
    assert not (tmp_path / "s").exists()


async def test_hard_links_and_non_files(family: Family, tmp_path: Path) -> None:
    """A hard-linked layer member reads through its target; a member that is a directory
    where a file is expected is an error naming it."""
    good = await save(family, tmp_path / "g.tar", ["tools"], format="docker-1.10")
    layer = first_layer(good)
    linked, dirred = tmp_path / "linked.tar", tmp_path / "dir.tar"
    with (
        tarfile.open(good) as tar,
        tarfile.open(linked, "w") as out1,
        tarfile.open(dirred, "w") as out2,
    ):
        for m in tar:
            data = tar.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == layer:
                copy = tarfile.TarInfo("elsewhere/layer.tar")
                copy.size = len(data or b"")
                out1.addfile(copy, io.BytesIO(data or b""))
                link = tarfile.TarInfo(layer)
                link.type, link.linkname = tarfile.LNKTYPE, "elsewhere/layer.tar"
                out1.addfile(link)
                d = tarfile.TarInfo(layer)
                d.type = tarfile.DIRTYPE
                out2.addfile(d)
                continue
            for out in (out1, out2):
                out.addfile(m, io.BytesIO(data) if data is not None else None)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    await hatchway.save([f"docker-archive:{good}"], a)
    await hatchway.save([f"docker-archive:{linked}"], b)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(hatchway.StoreError, match=f"member {layer} is not a file"):
        await hatchway.save([f"docker-archive:{dirred}"], tmp_path / "c.tar")


async def test_platform_is_checked(family: Family, tmp_path: Path) -> None:
    bundle = await save(family, tmp_path / "b.tar", ["tools"])
    with pytest.raises(hatchway.PlatformNotFound):
        await hatchway.save(
            [f"docker-archive:{bundle}"], tmp_path / "o.tar", platform="linux/s390x"
        )


async def test_oci_directory_problems(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "oci")
    image = b.image([b.layer({"f": b"x"}, compression="gzip")])
    b.tag(image, "x:1")
    b.save()
    (tmp_path / "oci" / "blobs" / "sha256" / image.digest[7:]).unlink()
    with pytest.raises(hatchway.BlobNotFound):
        await hatchway.save([f"oci:{tmp_path / 'oci'}"], tmp_path / "o.tar")
    (tmp_path / "oci" / "index.json").unlink()
    with pytest.raises(hatchway.StoreError, match=r"index\.json is missing"):
        await hatchway.save([f"oci:{tmp_path / 'oci'}"], tmp_path / "o.tar")
    for ref in ("@3", "nope"):
        b.save()
        with pytest.raises(hatchway.NoSuchImage):
            await hatchway.save([f"oci:{tmp_path / 'oci'}:{ref}"], tmp_path / "o.tar")
    assert not (tmp_path / "o.tar").exists()


async def test_an_archive_kind_that_is_neither(tmp_path: Path) -> None:
    odd = tmp_path / "odd.tar"
    with tarfile.open(odd, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    report = await hatchway.verify(odd)
    assert not report.ok and "not an image archive" in (report.problem or "")
    with pytest.raises(hatchway.StoreError, match="not a docker archive"):
        await hatchway.load([odd], store=tmp_path / "s")


def test_zstd_frames_walk() -> None:
    """The frame walker accepts every well-formed stream however it is cut into pieces, and
    rejects one cut short or followed by anything that is not a frame."""
    import os

    import zstandard

    from hatchway.transports.archive.unpack import ArchiveStreamError, ZstdFrames

    payload = os.urandom(200_000) + b"a" * 300_000
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    good = [
        zstandard.ZstdCompressor(level=3).compress(payload),
        zstandard.ZstdCompressor(write_checksum=True, write_content_size=False).compress(payload),
        zstandard.ZstdCompressor(level=1, threads=2).compress(payload * 4),
    ]
    good += [good[0] + good[1], skippable + good[2] + skippable]

    def walk(data: bytes, step: int) -> None:
        frames = ZstdFrames()
        for i in range(0, len(data), step):
            frames.feed(data[i : i + step])
        frames.finish()

    for data in good:
        for step in (1, 3, 4096, len(data)):
            if step == 1 and len(data) > 100_000:
                continue
            walk(data, step)
        for bad in (data[:-1], data[: len(data) // 3], data + b"x", data + b"garbage!", b""):
            with pytest.raises(ArchiveStreamError):
                walk(bad, 4096)
