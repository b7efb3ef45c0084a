"""``hatchway verify``: every good archive passes; each class of damage fails with exit 1
and one line naming the member."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import hatchway
from tests.archive_support import (
    FORMATS,
    NAMES,
    config_member,
    drop,
    first_layer,
    flip_byte,
    json_edit,
    members,
    rewrite,
    save,
    save_sync,
)
from tests.support import Family
from tests.test_cli import error_line, run

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.zst"])
async def test_good_archives_pass(family: Family, tmp_path: Path, fmt: str, suffix: str) -> None:
    archive = await save(family, tmp_path / f"b{suffix}", format=fmt)
    report = await hatchway.verify(archive)
    assert report.ok, report.problem
    assert len(report.images) == 5
    assert report.tags == 6
    assert report.layers == 6
    assert report.compression == {".tar": "none", ".tar.gz": "gzip", ".tar.zst": "zstd"}[suffix]
    assert report.layer_bytes > 0 and report.size > 0
    if fmt != "docker":  # layers uncompressed inside: the archive is larger than they are
        assert report.size > report.layer_bytes


async def test_oci_archive_and_compressed_layers_pass(tmp_path: Path) -> None:
    """An OCI archive keeps layers compressed: their diffIDs are checked by decompressing."""
    from hatchway.testing.layout import LayoutBuilder

    b = LayoutBuilder(tmp_path / "layout")
    gz = b.layer({"a": b"a" * 5000}, compression="gzip")
    zs = b.layer({"b": b"b" * 5000}, compression="zstd")
    b.tag(b.image([gz, zs]), "x:1")
    b.save()
    archive = tmp_path / "oci.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted((tmp_path / "layout").rglob("*")):
            tar.add(path, arcname=str(path.relative_to(tmp_path / "layout")), recursive=False)
    report = await hatchway.verify(archive)
    assert report.ok, report.problem
    assert report.layouts == ("index.json",)
    assert report.layers == 2
    damaged = rewrite(archive, tmp_path / "bad.tar", flip_byte(f"blobs/sha256/{gz.digest[7:]}"))
    bad = await hatchway.verify(damaged)
    assert not bad.ok
    assert bad.member == f"blobs/sha256/{gz.digest[7:]}"


async def expect_damage(archive: Path, member: str | None, words: str) -> None:
    report = await hatchway.verify(archive)
    assert not report.ok
    assert report.member == member, report.problem
    assert report.problem is not None and words in report.problem, report.problem
    # One line that names the archive and the member once each (no doubled prefixes).
    assert report.problem.count(str(archive)) == 1, report.problem
    if member is not None:
        assert report.problem.count(member) == 1, report.problem


@pytest.mark.parametrize("fmt", ["docker", "docker-1.10"])
async def test_each_class_of_damage(family: Family, tmp_path: Path, fmt: str) -> None:
    good = await save(family, tmp_path / "good.tar", ["app:2.0", "tools"], format=fmt)
    layer, config = first_layer(good), config_member(good)
    await expect_damage(rewrite(good, tmp_path / "flip.tar", flip_byte(layer)), layer, "digest")
    await expect_damage(rewrite(good, tmp_path / "gone.tar", drop(layer)), layer, "missing")
    missing_config = json_edit("manifest.json", lambda d: [{**d[0], "Config": "nope.json"}, *d[1:]])  # type: ignore[index]
    await expect_damage(rewrite(good, tmp_path / "cfg.tar", missing_config), "nope.json", "missing")
    await expect_damage(
        rewrite(good, tmp_path / "dup.tar", extra=[(layer, b"again")]), layer, "appears twice"
    )
    await expect_damage(
        rewrite(good, tmp_path / "unsafe.tar", extra=[("../x", b"x")]), "../x", "unsafe name"
    )
    await expect_damage(
        rewrite(good, tmp_path / "abs.tar", extra=[("/etc/x", b"x")]), "/etc/x", "unsafe name"
    )
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        at = tar.getmember(layer).offset_data
    (tmp_path / "cut.tar").write_bytes(data[: at + 100])
    await expect_damage(tmp_path / "cut.tar", layer, "truncated")
    with tarfile.open(good) as tar:
        after = tar.getmember(layer)
        boundary = after.offset_data + after.size + (-after.size % 512)
    (tmp_path / "boundary.tar").write_bytes(data[:boundary])
    await expect_damage(tmp_path / "boundary.tar", layer, "end-of-archive")
    renamed = json_edit(config, lambda c: {**c, "author": "x"})  # type: ignore[dict-item]
    await expect_damage(rewrite(good, tmp_path / "c2.tar", renamed), config, "digest mismatch")


async def test_layouts_that_disagree(family: Family, tmp_path: Path) -> None:
    good = await save(family, tmp_path / "good.tar", ["app:2.0", "tools"])
    tools_only = json_edit("manifest.json", lambda d: d[1:])  # type: ignore[index]
    await expect_damage(
        rewrite(good, tmp_path / "a.tar", tools_only), "index.json", "not in manifest.json"
    )
    repos = json_edit("repositories", lambda r: {**r, "ghost": {"latest": "ab" * 32}})  # type: ignore[dict-item]
    await expect_damage(rewrite(good, tmp_path / "b.tar", repos), "repositories", "ghost:latest")


async def test_legacy_damage(family: Family, tmp_path: Path) -> None:
    good = await save(family, tmp_path / "good.tar", ["app:2.0"], format="docker-legacy")
    files = members(good)
    top = json.loads(files["repositories"])["app"]["2.0"]
    orphan = json_edit(f"{top}/json", lambda d: {**d, "parent": "cd" * 32})  # type: ignore[dict-item]
    await expect_damage(
        rewrite(good, tmp_path / "p.tar", orphan), f"{top}/json", "is not in the archive"
    )
    repos = json_edit("repositories", lambda r: {"app": {"2.0": "ef" * 32}})
    await expect_damage(
        rewrite(good, tmp_path / "r.tar", repos), "repositories", "not in the archive"
    )


async def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"plain text\n" * 100)
    await expect_damage(tmp_path / "x", None, "not a tar archive")
    await expect_damage(tmp_path / "missing", None, "no such file")


def test_cli_exit_codes_and_lines(family: Family, tmp_path: Path) -> None:
    good = save_sync(family, tmp_path / "good.tar.zst", NAMES)
    result = run("verify", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(f"{good}: OK: 5 image(s), 6 tag(s), 6 layer(s)")
    plain = save_sync(family, tmp_path / "plain.tar", ["app:2.0"])
    layer = first_layer(plain)
    bad = rewrite(plain, tmp_path / "bad.tar", flip_byte(layer))
    result = run("verify", str(bad))
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(f"hatchway: error: {bad}: member {layer}: ")
    both = run("verify", "--json", str(good), str(bad))
    assert both.returncode == 1
    reports = json.loads(both.stdout)
    assert [r["ok"] for r in reports] == [True, False]
    assert reports[1]["member"] == layer
    with good.open("rb") as stdin:
        import subprocess

        from tests.test_cli import HATCHWAY

        piped = subprocess.run([*HATCHWAY, "verify", "-"], stdin=stdin, capture_output=True)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.decode().startswith("-: OK: 5 image(s)")
