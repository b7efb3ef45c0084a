"""Name semantics of ``docker save`` (docs/names.md), against a real OCI layout store."""

from __future__ import annotations

from pathlib import Path

import pytest

import hatchway
from hatchway.model import hex_of
from tests.support import Archive, Family, files_under, read_archive

pytestmark = pytest.mark.anyio


async def save(family: Family, out: Path, *names: str, **kwargs: object) -> Archive:
    await hatchway.save(list(names), out, store=family.root, **kwargs)  # type: ignore[arg-type]
    return read_archive(out.read_bytes())


def repo_tags(archive: Archive) -> list[list[str] | None]:
    return [entry["RepoTags"] for entry in archive.json("manifest.json")]


def configs(archive: Archive) -> list[str]:
    return [entry["Config"].rsplit("/", 1)[-1] for entry in archive.json("manifest.json")]


async def test_tag_records_only_that_tag(family: Family, tmp_path: Path) -> None:
    archive = await save(family, tmp_path / "o.tar", "app:2.0")
    assert repo_tags(archive) == [["app:2.0"]]
    assert configs(archive) == [hex_of(family.images["app2"].config_digest)]


async def test_repository_means_every_tag(family: Family, tmp_path: Path) -> None:
    archive = await save(family, tmp_path / "o.tar", "app")
    assert repo_tags(archive) == [["app:1.0"], ["app:2.0", "app:latest"]]


async def test_full_id_records_no_tag(family: Family, tmp_path: Path) -> None:
    full = hex_of(family.images["tools"].config_digest)
    archive = await save(family, tmp_path / "o.tar", full)
    assert repo_tags(archive) == [None]
    assert configs(archive) == [full]
    assert "repositories" not in archive.names


async def test_sha256_id_and_short_id(family: Family, tmp_path: Path) -> None:
    full = hex_of(family.images["tools"].config_digest)
    a = await save(family, tmp_path / "a.tar", "sha256:" + full)
    b = await save(family, tmp_path / "b.tar", full[:12])
    assert configs(a) == configs(b) == [full]


async def test_digest_reference_records_no_tag(family: Family, tmp_path: Path) -> None:
    digest = family.images["app1"].digest
    archive = await save(family, tmp_path / "o.tar", f"app@{digest}")
    assert repo_tags(archive) == [None]
    assert configs(archive) == [hex_of(family.images["app1"].config_digest)]


async def test_digest_of_another_repository_is_missing(family: Family, tmp_path: Path) -> None:
    with pytest.raises(hatchway.NoSuchImage):
        await save(family, tmp_path / "o.tar", f"tools@{family.images['app1'].digest}")


async def test_ambiguous_prefix_is_an_error(family: Family, tmp_path: Path) -> None:
    ids = [hex_of(i.config_digest) for i in family.images.values() if i.config_digest]
    # The empty-ish prefix of one hex digit shared by two images is ambiguous.
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) >= 2)
    with pytest.raises(hatchway.AmbiguousReference) as info:
        await save(family, tmp_path / "o.tar", shared)
    assert len(info.value.candidates) >= 2
    assert not (tmp_path / "o.tar").exists()


async def test_missing_image_writes_nothing(family: Family, tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.tar"
    out.parent.mkdir()
    with pytest.raises(hatchway.NoSuchImage, match=r"^No such image: nosuch:1$"):
        await save(family, out, "nosuch:1")
    assert files_under(out.parent) == []


async def test_existing_output_untouched_on_error(family: Family, tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    out.write_bytes(b"precious")
    with pytest.raises(hatchway.NoSuchImage):
        await save(family, out, "app:1.0", "nosuch")
    assert out.read_bytes() == b"precious"
    assert [p for p in files_under(tmp_path) if not p.startswith("store")] == ["o.tar"]


async def test_one_bad_name_among_good_ones_fails_the_save(family: Family, tmp_path: Path) -> None:
    with pytest.raises(hatchway.NoSuchImage, match="missing:9"):
        await save(family, tmp_path / "o.tar", "app:1.0", "missing:9", "tools")
    assert not (tmp_path / "o.tar").exists()


async def test_first_bad_name_in_order_is_reported(family: Family, tmp_path: Path) -> None:
    with pytest.raises(hatchway.NoSuchImage, match="first:1"):
        await save(family, tmp_path / "o.tar", "first:1", "app", "second:2")


async def test_same_image_twice_appears_once(family: Family, tmp_path: Path) -> None:
    full = hex_of(family.images["app2"].config_digest)
    archive = await save(family, tmp_path / "o.tar", "app:2.0", full, "app:2.0", "app:latest")
    assert repo_tags(archive) == [["app:2.0", "app:latest"]]
    assert len(archive.names) == len(set(archive.names))


@pytest.mark.parametrize(
    "name",
    ["busybox", "library/busybox", "docker.io/library/busybox", "index.docker.io/library/busybox"],
)
async def test_familiar_names_are_one_repository(family: Family, tmp_path: Path, name: str) -> None:
    archive = await save(family, tmp_path / "o.tar", name + ":latest")
    assert repo_tags(archive) == [["busybox:latest"]]
    assert archive.json("index.json")["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "docker.io/library/busybox:latest",
        "org.opencontainers.image.ref.name": "latest",
    }


async def test_host_port_names_keep_their_host(family: Family, tmp_path: Path) -> None:
    archive = await save(family, tmp_path / "o.tar", "127.0.0.1:5000/other")
    assert repo_tags(archive) == [["127.0.0.1:5000/other:v1"]]
    # The value is the top layer's blob: kept as stored here, so its own digest.
    assert archive.json("repositories") == {
        "127.0.0.1:5000/other": {"v1": hex_of(family.layers["l4"].digest)}
    }


async def test_bare_ref_name_tag_is_unnamed_but_reachable_by_id(
    family: Family, tmp_path: Path
) -> None:
    with pytest.raises(hatchway.NoSuchImage):
        await save(family, tmp_path / "o.tar", "orphan")
    full = hex_of(family.images["orphan"].config_digest)
    archive = await save(family, tmp_path / "o.tar", full[:10])
    assert configs(archive) == [full]


async def test_ref_name_with_repository_names_the_image(family: Family, tmp_path: Path) -> None:
    archive = await save(family, tmp_path / "o.tar", "tools")
    assert repo_tags(archive) == [["tools:latest"]]


async def test_platform_is_picked_from_an_index(family: Family, tmp_path: Path) -> None:
    arm = await save(family, tmp_path / "a.tar", "multi", platform="linux/arm64")
    amd = await save(family, tmp_path / "b.tar", "multi", platform="linux/amd64")
    assert configs(arm) == [hex_of(family.images["arm64"].config_digest)]
    assert configs(amd) == [hex_of(family.images["amd64"].config_digest)]
    with pytest.raises(hatchway.PlatformNotFound, match="linux/s390x"):
        await save(family, tmp_path / "c.tar", "multi", platform="linux/s390x")


async def test_invalid_reference_is_rejected_before_reading(tmp_path: Path) -> None:
    with pytest.raises(hatchway.InvalidReference, match="lowercase"):
        await hatchway.save(["App:1"], tmp_path / "o.tar", store=tmp_path / "no-store")
    assert files_under(tmp_path) == []


async def test_id_lookup_skips_an_unrelated_broken_entry(family: Family, tmp_path: Path) -> None:
    family.builder.blob_path(family.images["app1"].digest).unlink()  # app:1.0's manifest
    full = hex_of(family.images["tools"].config_digest)
    archive = await save(family, tmp_path / "o.tar", full[:12])
    assert configs(archive) == [full]
    # Nothing matches: "No such image" is the headline, the unreadable entry only a note.
    with pytest.raises(hatchway.NoSuchImage) as info:
        await save(family, tmp_path / "p.tar", "0000000")
    assert str(info.value).startswith("No such image: 0000000 (1 store entry could not be read")
    assert family.images["app1"].digest in str(info.value)


async def test_digest_of_a_platform_manifest_inside_an_index(
    family: Family, tmp_path: Path
) -> None:
    arm = family.images["arm64"]
    archive = await save(family, tmp_path / "o.tar", f"multi@{arm.digest}", platform="linux/amd64")
    assert configs(archive) == [hex_of(arm.config_digest)]
    assert repo_tags(archive) == [None]
