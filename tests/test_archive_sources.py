"""Archives as sources: ``docker-archive:``, ``oci-archive:`` and ``oci:`` names.

hatchway's own archives of every format, plain and compressed, are read back and re-saved
with the same image IDs and layer bytes; REFs select images; bundles merge with shared
layers moved once; every kind of bad archive fails with one error naming what is wrong, and
leaves nothing behind (no output, no unpacked copy).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import hatchway
from hatchway.progress import CopyStarted, ProgressEvent
from hatchway.reference import Transport, parse_query
from hatchway.testing.layout import LayoutBuilder
from tests.archive_support import (
    FORMATS,
    NAMES,
    config_member,
    drop,
    first_layer,
    flip_byte,
    json_edit,
    layer_bytes,
    members,
    rewrite,
    save,
)
from tests.support import Family, files_under

pytestmark = pytest.mark.anyio


def ids_and_tags(path: Path) -> list[tuple[str, list[str] | None]]:
    files = members(path)
    return [
        (e["Config"].rsplit("/", 1)[-1].removesuffix(".json"), e["RepoTags"])
        for e in json.loads(files["manifest.json"])
    ]


def test_names_parse_to_their_transport() -> None:
    assert parse_query("docker-archive:b.tar").transport is Transport.DOCKER_ARCHIVE
    assert parse_query("oci-archive:b.tar:x").transport is Transport.OCI_ARCHIVE
    assert parse_query("oci:dir:@1").source_index == 1
    query = parse_query("docker-archive:/x/b.tar.zst:busybox")
    assert (query.path, query.archive_ref) == ("/x/b.tar.zst", "busybox")
    assert query.reference is not None and query.reference.tag == "latest"
    for bad in ("docker-archive:", "oci:d:", "docker-archive:b:@x", "oci-archive:b:a b"):
        with pytest.raises(hatchway.InvalidReference):
            parse_query(bad)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.zst"])
async def test_resaving_keeps_ids_and_layers(family: Family, tmp_path: Path, suffix: str) -> None:
    """Each format read back and saved as that format again is the same archive (for the
    two with configs) — the same image IDs and the same layer bytes."""
    for fmt in ("docker", "docker-1.10"):
        original = await save(family, tmp_path / f"{fmt}{suffix}", format=fmt)
        plain = await save(family, tmp_path / f"{fmt}-plain.tar", format=fmt)
        again = tmp_path / f"again-{fmt}.tar"
        await hatchway.save([f"docker-archive:{original}"], again, format=fmt)
        assert again.read_bytes() == plain.read_bytes(), fmt


async def test_every_format_reads_back(family: Family, tmp_path: Path) -> None:
    """Every layout saved again as the default one: the same image IDs, tags and layer
    contents; byte for byte the same archive where the layers were kept as stored (the
    docker layout), else the same as a save that writes them uncompressed."""
    reference = await save(family, tmp_path / "ref.tar")
    rewritten = tmp_path / "rewritten.tar"
    await hatchway.save(NAMES, rewritten, store=family.root, uncompressed_layers=True)
    expected_tags = [tags for _, tags in ids_and_tags(reference)]
    for fmt in FORMATS:
        archive = await save(family, tmp_path / f"{fmt}.tar", format=fmt)
        out = tmp_path / f"from-{fmt}.tar"
        await hatchway.save([f"docker-archive:{archive}"], out)
        assert sorted(map(str, [t for _, t in ids_and_tags(out)])) == sorted(
            map(str, expected_tags)
        ), fmt
        assert layer_bytes(out) == layer_bytes(reference), fmt
        if fmt == "docker":
            assert out.read_bytes() == reference.read_bytes(), fmt
        elif fmt == "docker-1.10":
            assert out.read_bytes() == rewritten.read_bytes(), fmt


async def test_legacy_archives_get_stable_ids(family: Family, tmp_path: Path) -> None:
    """The legacy layout has no config: one is built (docs/bundles.md), the same every time,
    and saving it as docker-legacy again gives the same v1 directories and layers."""
    legacy = await save(family, tmp_path / "legacy.tar", format="docker-legacy")
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    await hatchway.save([f"docker-archive:{legacy}"], first)
    await hatchway.save([f"docker-archive:{legacy}"], second)
    assert first.read_bytes() == second.read_bytes()
    again = tmp_path / "again.tar"
    await hatchway.save([f"docker-archive:{legacy}"], again, format="docker-legacy")
    assert members(again) == members(legacy)


async def test_oci_archive_and_oci_directory(family: Family, tmp_path: Path) -> None:
    reference = await save(family, tmp_path / "ref.tar", ["app:1.0"])
    docker = await save(family, tmp_path / "docker.tar.zst", NAMES)
    from_oci_archive = tmp_path / "a.tar"
    await hatchway.save([f"oci-archive:{docker}:docker.io/library/app:1.0"], from_oci_archive)
    assert from_oci_archive.read_bytes() == reference.read_bytes()
    # The store is an OCI layout directory: oci:DIR:REF matches its ref.name annotations.
    from_dir = tmp_path / "b.tar"
    await hatchway.save([f"oci:{family.root}:app:1.0"], from_dir)
    assert from_dir.read_bytes() == reference.read_bytes()


async def test_bare_oci_tags_name_no_repository(tmp_path: Path) -> None:
    """An OCI layout entry named only ``bookworm`` (as skopeo writes) is copied untagged."""
    b = LayoutBuilder(tmp_path / "oci")
    image = b.image([b.layer({"f": b"x"})])
    b.tag(image, "bookworm", style="ref")
    b.save()
    out = tmp_path / "o.tar"
    await hatchway.save([f"oci:{tmp_path / 'oci'}:bookworm"], out)
    [(image_id, tags)] = ids_and_tags(out)
    assert tags is None
    assert "sha256:" + image_id == image.config_digest


async def test_refs_select_images(family: Family, tmp_path: Path) -> None:
    bundle = await save(family, tmp_path / "bundle.tar", NAMES)
    out = tmp_path / "o.tar"
    await hatchway.save([f"docker-archive:{bundle}:tools", f"docker-archive:{bundle}:@0"], out)
    assert [t for _, t in ids_and_tags(out)] == [["tools:latest"], ["app:1.0"]]
    for ref in ("nope:1", "@9"):
        with pytest.raises(hatchway.NoSuchImage, match="No such image"):
            await hatchway.save([f"docker-archive:{bundle}:{ref}"], out)


async def test_merging_bundles_moves_shared_layers_once(family: Family, tmp_path: Path) -> None:
    one = await save(family, tmp_path / "one.tar.zst", ["app:1.0", "tools"])
    two = await save(family, tmp_path / "two.tar", ["app:2.0", "127.0.0.1:5000/other:v1"])
    events: list[ProgressEvent] = []
    merged = tmp_path / "merged.tar"
    await hatchway.save(
        [f"docker-archive:{one}", f"docker-archive:{two}", "busybox"],
        merged,
        store=family.root,
        progress=events.append,
    )
    everything = ["app:1.0", "tools", "app:2.0", "127.0.0.1:5000/other:v1", "busybox"]
    direct = await save(family, tmp_path / "direct.tar", everything)
    assert merged.read_bytes() == direct.read_bytes()
    started = [e for e in events if isinstance(e, CopyStarted)]
    assert started[0].layers == 6  # base, l1, l2, l3, l4, base2: each once


async def _damaged(family: Family, tmp_path: Path, fmt: str = "docker") -> Path:
    return await save(family, tmp_path / f"good-{fmt}.tar", ["app:2.0", "tools"], format=fmt)


async def expect_error(archive: Path, tmp_path: Path, match: str, name: str | None = None) -> None:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(hatchway.HatchwayError, match=match):
        await hatchway.save([name or f"docker-archive:{archive}"], out / "o.tar", tmpdir=out)
    assert files_under(out) == []


async def test_bad_archives_fail_naming_the_member(family: Family, tmp_path: Path) -> None:
    good = await _damaged(family, tmp_path)
    layer = first_layer(good)
    cases = {
        "flipped": (flip_byte(layer), "digest mismatch"),
        "missing-layer": (drop(layer), f"member {layer} is missing"),
        "missing-config": (drop(config_member(good)), f"member {config_member(good)} is missing"),
        "bad-manifest": (
            json_edit("manifest.json", lambda d: [{**d[0], "Config": "nope.json"}]),  # type: ignore[index]
            "member nope.json is missing",
        ),
    }
    for label, (edit, match) in cases.items():
        damaged = rewrite(good, tmp_path / f"{label}.tar", edit)
        await expect_error(damaged, tmp_path, match)


async def test_config_not_matching_its_name(family: Family, tmp_path: Path) -> None:
    good = await _damaged(family, tmp_path, "docker-1.10")
    config = config_member(good)
    damaged = rewrite(
        good,
        tmp_path / "c.tar",
        json_edit(config, lambda c: {**c, "author": "mallory"}),  # type: ignore[dict-item]
    )
    await expect_error(damaged, tmp_path, f"member {config}: digest mismatch")


@pytest.mark.parametrize("unsafe", ["../evil", "/etc/evil", "a/../../evil"])
async def test_unsafe_member_names(family: Family, tmp_path: Path, unsafe: str) -> None:
    good = await _damaged(family, tmp_path)
    damaged = rewrite(good, tmp_path / "unsafe.tar", extra=[(unsafe, b"x")])
    await expect_error(damaged, tmp_path, "unsafe name")


async def test_duplicate_members(family: Family, tmp_path: Path) -> None:
    good = await _damaged(family, tmp_path)
    damaged = rewrite(good, tmp_path / "dup.tar", extra=[("manifest.json", b"[]")])
    await expect_error(damaged, tmp_path, "member manifest.json appears twice")


async def test_a_symlink_leaving_the_archive(family: Family, tmp_path: Path) -> None:
    good = await _damaged(family, tmp_path, "docker-1.10")
    layer = first_layer(good)
    damaged = tmp_path / "link.tar"
    with tarfile.open(good) as tar, tarfile.open(damaged, "w") as out:
        for m in tar:
            if m.name == layer:
                m = tarfile.TarInfo(layer)
                m.type, m.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
                out.addfile(m)
            else:
                out.addfile(m, tar.extractfile(m) if m.isfile() else None)
    await expect_error(damaged, tmp_path, "links outside the archive")


async def test_not_archives(tmp_path: Path) -> None:
    (tmp_path / "text").write_bytes(b"hello\n" * 200)
    await expect_error(tmp_path / "text", tmp_path, "not a tar archive")
    await expect_error(tmp_path / "missing.tar", tmp_path, "no such file")
    await expect_error(tmp_path, tmp_path, "is a directory")
    (tmp_path / "t.tar.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(40))
    await expect_error(tmp_path / "t.tar.zst", tmp_path, "damaged zstd compression")


async def test_truncated_archives(family: Family, tmp_path: Path) -> None:
    good = await _damaged(family, tmp_path)
    data = good.read_bytes()
    layer = first_layer(good)
    cut = tmp_path / "cut.tar"
    with tarfile.open(good) as tar:
        offset = tar.getmember(layer).offset_data
    cut.write_bytes(data[: offset + 10])
    await expect_error(cut, tmp_path, f"member {layer} is truncated")
    packed = await save(family, tmp_path / "p.tar.gz", ["app:2.0"])
    short = tmp_path / "short.tar.gz"
    short.write_bytes(packed.read_bytes()[:-20])
    await expect_error(short, tmp_path, "damaged gzip compression")


async def test_oci_kinds_are_told_apart(family: Family, tmp_path: Path) -> None:
    legacy = await save(family, tmp_path / "legacy.tar", ["tools"], format="docker-legacy")
    await expect_error(legacy, tmp_path, "not an OCI image layout", f"oci-archive:{legacy}")
    await expect_error(tmp_path / "nodir", tmp_path, "no such directory", f"oci:{tmp_path}/nodir")


async def test_symlinked_shared_layers_resolve(tmp_path: Path) -> None:
    """docker-1.10 writes a repeated layer as a symlink to its first copy; it reads back."""
    b = LayoutBuilder(tmp_path / "store")
    shared = b.layer({"shared": b"s" * 3000}, compression="none")
    other = b.layer({"other": b"o"}, compression="gzip")
    b.tag(b.image([other, shared]), "x:1")
    b.tag(b.image([shared]), "y:1")
    b.save()
    archive = tmp_path / "a.tar"
    await hatchway.save(["x:1", "y:1"], archive, store=b.root, format="docker-1.10")
    assert any(v.startswith(b"-> ") for v in members(archive).values())
    again = tmp_path / "again.tar"
    await hatchway.save([f"docker-archive:{archive}"], again, format="docker-1.10")
    assert again.read_bytes() == archive.read_bytes()


async def test_unpacked_copies_are_removed(family: Family, tmp_path: Path) -> None:
    packed = await save(family, tmp_path / "p.tar.zst", ["app"])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    await hatchway.save([f"docker-archive:{packed}"], tmp_path / "o.tar", tmpdir=scratch)
    assert files_under(scratch) == []


async def test_cancelling_while_unpacking_leaves_nothing(tmp_path: Path) -> None:
    """A copy cancelled while a compressed archive is being unpacked does not wait for the
    unpacking to finish, and its scratch file is gone at once.  The archive arrives through a
    FIFO that is never finished, so an unpacking the copy waited for would never end."""
    import os

    import anyio
    import zstandard

    from hatchway.files import write_all

    b = LayoutBuilder(tmp_path / "store")
    b.tag(b.image([b.layer({"big": os.urandom(1 << 20)}, compression="none")]), "big:1")
    b.save()
    plain = tmp_path / "big.tar"
    await hatchway.save(["big:1"], plain, store=b.root)
    packed = zstandard.ZstdCompressor(level=1).compress(plain.read_bytes())
    fifo = tmp_path / "in.tar.zst"
    os.mkfifo(fifo)
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    writer: list[int] = []

    def feed_part() -> None:
        # Returns once the reader took all but a pipe buffer (64 KiB) of it: by then it has
        # created its scratch file and is unpacking.
        writer.append(os.open(fifo, os.O_WRONLY))
        write_all(writer[0], packed[: 512 << 10])

    async def save() -> None:
        await hatchway.save([f"docker-archive:{fifo}"], out / "o.tar", tmpdir=scratch)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(save)
            with anyio.fail_after(30):
                await anyio.to_thread.run_sync(feed_part)
            assert [p.name[:18] for p in scratch.iterdir()] == [".hatchway-archive-"]
            tg.cancel_scope.cancel()
        assert files_under(scratch) == []
        assert files_under(out) == []
    finally:
        for fd in writer:
            os.close(fd)
