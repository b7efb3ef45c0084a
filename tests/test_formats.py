"""Archive plans for the three layouts (pure): names, bytes, order and mtimes (docs/formats.md)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from hatchway.formats import ArchiveFormat, ExportImage, Member, MemberKind, plan_archive
from hatchway.formats.plan import data_file, walk_order
from hatchway.formats.v1 import v1_layers
from hatchway.model import Compression, Descriptor, Layer, parse_config, sha256_digest
from hatchway.reference import parse_reference


def diff(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"layer{n}".encode()).hexdigest()


def image(
    diffs: list[str], tags: list[str], created: str = "2024-01-02T03:04:05Z", cmd: str = "sh"
) -> ExportImage:
    raw = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {"Cmd": [cmd]},
            "rootfs": {"type": "layers", "diff_ids": diffs},
            "history": [{"created_by": "x"}],
        }
    ).encode()
    config = parse_config(raw, sha256_digest(raw))
    layers = tuple(
        Layer(Descriptor("application/vnd.oci.image.layer.v1.tar", d, 10), d, Compression.NONE)
        for d in diffs
    )
    return ExportImage(config, layers, tuple(parse_reference(t) for t in tags))


SIZES = {diff(n): 1000 + n for n in range(10)}
CREATED = 1704164645  # 2024-01-02T03:04:05Z


def by_name(members: tuple[Member, ...]) -> dict[str, Member]:
    return {m.name: m for m in members}


def layer_of(member: Member) -> str:
    assert member.layer is not None
    return member.layer


def json_of(members: tuple[Member, ...], name: str) -> Any:
    data = by_name(members)[name].data
    assert data is not None
    return json.loads(data)


def test_docker_layout() -> None:
    a = image([diff(0), diff(1)], ["app:1", "app:latest"])
    b = image([diff(0), diff(2)], [], cmd="other")
    members = plan_archive(ArchiveFormat.DOCKER, [a, b], SIZES)
    names = [m.name for m in members]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-4:] == ["index.json", "manifest.json", "oci-layout", "repositories"]
    assert names == sorted(names, key=lambda n: n.split("/"))
    m = by_name(members)
    assert m["oci-layout"].data == b'{"imageLayoutVersion": "1.0.0"}'
    # every layer exactly once, uncompressed, under its diffID, with the image's created time
    layer_members = [x for x in members if x.layer is not None]
    assert sorted(layer_of(x) for x in layer_members) == sorted([diff(0), diff(1), diff(2)])
    assert all(x.mtime == CREATED and x.size == SIZES[layer_of(x)] for x in layer_members)
    assert m[f"blobs/sha256/{a.config.id[7:]}"].data == a.config.raw
    manifest = json_of(members, "manifest.json")
    assert manifest == [
        {
            "Config": f"blobs/sha256/{a.config.id[7:]}",
            "RepoTags": ["app:1", "app:latest"],
            "Layers": [f"blobs/sha256/{diff(0)[7:]}", f"blobs/sha256/{diff(1)[7:]}"],
        },
        {
            "Config": f"blobs/sha256/{b.config.id[7:]}",
            "RepoTags": None,
            "Layers": [f"blobs/sha256/{diff(0)[7:]}", f"blobs/sha256/{diff(2)[7:]}"],
        },
    ]
    assert list(manifest[0]) == ["Config", "RepoTags", "Layers"]
    assert m["manifest.json"].data.endswith(b"]\n")  # type: ignore[union-attr]
    index = json_of(members, "index.json")
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    entries = index["manifests"]
    assert [e.get("annotations") for e in entries] == [
        {
            "io.containerd.image.name": "docker.io/library/app:1",
            "org.opencontainers.image.ref.name": "1",
        },
        {
            "io.containerd.image.name": "docker.io/library/app:latest",
            "org.opencontainers.image.ref.name": "latest",
        },
        None,
    ]
    for entry in entries:
        blob = m["blobs/sha256/" + entry["digest"][7:]]
        assert blob.data is not None and blob.mtime == 0
        assert sha256_digest(blob.data) == entry["digest"] and len(blob.data) == entry["size"]
        oci = json.loads(blob.data)
        assert oci["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert oci["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
        for layer in oci["layers"]:
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
            assert layer["size"] == SIZES[layer["digest"]]
    assert json_of(members, "repositories") == {"app": {"1": diff(1)[7:], "latest": diff(1)[7:]}}
    for name in ("index.json", "manifest.json", "oci-layout", "repositories", "blobs"):
        assert m[name].mtime == 0


def test_untagged_docker_archive_has_no_repositories() -> None:
    members = plan_archive(ArchiveFormat.DOCKER, [image([diff(0)], [])], SIZES)
    assert "repositories" not in by_name(members)


@pytest.mark.parametrize("fmt", [ArchiveFormat.DOCKER_1_10, ArchiveFormat.DOCKER_LEGACY])
def test_v1_directories(fmt: ArchiveFormat) -> None:
    a = image([diff(0), diff(1)], ["app:1"])
    members = plan_archive(fmt, [a], SIZES)
    m = by_name(members)
    ids = [v.id for v in v1_layers(a)]
    for i, v1_id in enumerate(ids):
        assert m[v1_id].kind is MemberKind.DIRECTORY
        assert m[f"{v1_id}/VERSION"].data == b"1.0"
        assert m[f"{v1_id}/layer.tar"].layer == a.diff_ids[i]
        body = json_of(members, f"{v1_id}/json")
        assert body["id"] == v1_id
        assert body.get("parent") == (ids[i - 1] if i else None)
        assert all(m[f"{v1_id}/{f}"].mtime == CREATED for f in ("VERSION", "json", "layer.tar"))
    top = json_of(members, f"{ids[-1]}/json")
    assert top["config"] == {"Cmd": ["sh"]} and "rootfs" not in top
    repos = m["repositories"]
    assert repos.data == json.dumps({"app": {"1": ids[-1]}}, separators=(",", ":")).encode() + b"\n"
    assert repos.mtime == 0
    if fmt is ArchiveFormat.DOCKER_LEGACY:
        assert "manifest.json" not in m and f"{a.config.id[7:]}.json" not in m
    else:
        assert json_of(members, "manifest.json") == [
            {
                "Config": f"{a.config.id[7:]}.json",
                "RepoTags": ["app:1"],
                "Layers": [f"{i}/layer.tar" for i in ids],
            }
        ]
        assert m[f"{a.config.id[7:]}.json"].data == a.config.raw
        assert m["manifest.json"].mtime == 0


def test_v1_ids_depend_on_the_whole_chain() -> None:
    one = v1_layers(image([diff(0), diff(1)], []))
    two = v1_layers(image([diff(2), diff(1)], []))
    same_layers_other_config = v1_layers(image([diff(0), diff(1)], [], cmd="x"))
    assert one[1].id != two[1].id
    assert one[0].id == same_layers_other_config[0].id
    assert one[1].id != same_layers_other_config[1].id


def test_duplicate_layer_content_is_stored_once_as_symlinks() -> None:
    a = image([diff(0), diff(1), diff(0)], ["dup:1"])  # the same content twice in one image
    b = image([diff(3), diff(1)], ["other:1"])
    members = plan_archive(ArchiveFormat.DOCKER_1_10, [a, b], SIZES)
    bodies = [x for x in members if x.layer is not None]
    links = [x for x in members if x.kind is MemberKind.SYMLINK]
    assert sorted(layer_of(x) for x in bodies) == sorted({diff(0), diff(1), diff(3)})
    assert len(links) == 2
    m = by_name(members)
    for link in links:
        assert link.linkname.startswith("../") and link.linkname.endswith("/layer.tar")
        assert m[link.linkname[3:]].layer is not None
    manifest = json_of(members, "manifest.json")
    assert [len(e["Layers"]) for e in manifest] == [3, 2]
    # Every layer manifest.json lists is the file holding the bytes, never a symlink:
    # containers/image (podman load) sizes a layer by the header of the path listed.
    for entry, img in zip(manifest, (a, b), strict=True):
        assert [m[path].layer for path in entry["Layers"]] == list(img.diff_ids)
    docker = plan_archive(ArchiveFormat.DOCKER, [a, b], SIZES)
    assert sorted(x.layer for x in docker if x.layer) == sorted({diff(0), diff(1), diff(3)})
    assert (
        json_of(docker, "manifest.json")[0]["Layers"][0]
        == json_of(docker, "manifest.json")[0]["Layers"][2]
    )


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
def test_no_duplicate_names_and_walk_order(fmt: ArchiveFormat) -> None:
    images = [
        image([diff(0), diff(1)], ["a:1"]),
        image([diff(0), diff(1), diff(2)], ["a:2", "b:1"]),
        image([diff(0), diff(1)], ["c:1"], cmd="c"),
    ]
    members = plan_archive(fmt, images, SIZES)
    names = [x.name for x in members]
    assert len(names) == len(set(names))
    assert names == sorted(names, key=lambda n: n.split("/"))
    for x in members:  # directories before their children
        parent = x.name.rsplit("/", 1)[0]
        if "/" in x.name:
            assert names.index(parent) < names.index(x.name)


@pytest.mark.parametrize("fmt", list(ArchiveFormat))
def test_image_without_layers(fmt: ArchiveFormat) -> None:
    """A config-only image still gets its manifest entry, and no repositories entry."""
    members = plan_archive(fmt, [image([], ["empty:1"])], SIZES)
    if fmt is not ArchiveFormat.DOCKER_LEGACY:
        assert json_of(members, "manifest.json")[0]["Layers"] == []
    assert "repositories" not in by_name(members)


def test_walk_order_sorts_names_by_their_path_components() -> None:
    """As a directory walk would: component by component, so "a/b" comes before "a-c" and
    "a.b" (a directory before names that only share its prefix), whatever the characters."""
    names = ["a-c", "a/b/c", "a", "a.b/c", "ab", "a b", "a/b", "a/b-c", "a/b/c/d", "b", "a.b"]
    members = [data_file(name, b"", 0) for name in names]
    expected = sorted(names, key=lambda n: tuple(n.split("/")))
    assert [m.name for m in walk_order(members)] == expected
    assert expected.index("a/b/c") < expected.index("a-c")  # what a plain sort gets wrong
