"""``push`` into a real registry (docker-registry on loopback): from the store and from
registries; read back by skopeo (which verifies every digest) with the original image IDs;
saved back into the very archive a save from the source writes; a second push uploads
nothing; shared layers are uploaded once and mounted; names, digests and refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hatchway
from hatchway import HatchwayError, PushResult
from tests.peers import Registry, Skopeo
from tests.push_support import (
    manifest_of,
    read_back,
    settled_requests,
    tags_of,
    traffic_since,
)
from tests.registry_support import Lab, options, save_archive, save_from_registry
from tests.support import Family, ProbeStore, read_archive

pytestmark = [pytest.mark.anyio, pytest.mark.peers]

#: The family images push takes from the store: OCI and Docker manifests, gzip, zstd and
#: uncompressed layers, a base layer shared by three repositories.
NAMES = ["app", "tools", "busybox", "127.0.0.1:5000/other:v1"]


@pytest.fixture
def target(push_target: Registry) -> Registry:
    return push_target


async def _push(names: list[str], to: str, store: object = None, **kw: object) -> PushResult:
    return await hatchway.push(names, to, store=store, registry=options(), **kw)  # type: ignore[arg-type]


def _manifest(registry: Registry, repository: str, reference: str) -> tuple[int, dict[str, Any]]:
    return manifest_of(registry, repository, reference)


async def test_push_from_the_store_reads_back_with_the_original_image_ids(
    family: Family, target: Registry, skopeo: Skopeo, prefix: str, tmp_path: Path
) -> None:
    result = await _push(NAMES, f"{target.host}/{prefix}", family.root)
    img = family.images
    expected = {
        f"{target.host}/{prefix}/library/app:1.0": img["app1"].config_digest,
        f"{target.host}/{prefix}/library/app:2.0": img["app2"].config_digest,
        f"{target.host}/{prefix}/library/app:latest": img["app2"].config_digest,
        f"{target.host}/{prefix}/library/tools:latest": img["tools"].config_digest,
        f"{target.host}/{prefix}/library/busybox:latest": img["busybox"].config_digest,
        f"{target.host}/{prefix}/other:v1": img["other"].config_digest,
    }
    assert [(i.name, i.id) for i in result.images] == list(expected.items())
    for n, (name, image_id) in enumerate(expected.items()):
        back = read_back(skopeo, name, tmp_path / f"oci{n}")
        assert back.image_id == image_id
    # An image without uncompressed layers keeps its manifest (and digest) as stored.
    assert result.images[0].digest == img["app1"].digest
    assert result.images[4].digest == img["busybox"].digest
    # One with an uncompressed layer gets it gzip-compressed: same image, new manifest.
    assert result.images[1].digest != img["app2"].digest
    status, manifest = _manifest(target, f"{prefix}/library/app", "2.0")
    assert status == 200
    layer = "application/vnd.oci.image.layer.v1.tar"
    types = [la["mediaType"] for la in manifest["layers"]]
    assert types == [f"{layer}+gzip", f"{layer}+zstd", f"{layer}+gzip"]


async def test_saving_the_pushed_images_gives_the_archive_a_save_from_the_store_gives(
    family: Family, target: Registry, prefix: str, tmp_path: Path
) -> None:
    """The content arrives as it left: saved with uncompressed layers (the push compressed the
    store's uncompressed layer on the way), the pushed images are the very archive the store
    gives."""
    result = await _push(NAMES, f"{target.host}/{prefix}", family.root)
    by_id = {i.id: i for i in result.images}
    ids = list(by_id)
    from_store = await save_archive(
        ids, tmp_path / "store.tar", family.root, uncompressed_layers=True
    )
    # The same images by digest from the registry: no tags either side, so byte for byte.
    digests = [f"docker://{i.name.rsplit(':', 1)[0]}@{i.digest}" for i in by_id.values()]
    from_registry = await save_from_registry(
        digests, tmp_path / "reg.tar", options(), uncompressed_layers=True
    )
    assert from_registry == from_store
    # By tag: the same members and bytes, apart from the files that record the names.
    store_archive = await save_archive(
        ["app:2.0"], tmp_path / "s.tar", family.root, uncompressed_layers=True
    )
    tagged_store = read_archive(store_archive)
    pushed = f"docker://{target.host}/{prefix}/library/app:2.0"
    tagged_reg = read_archive(
        await save_from_registry([pushed], tmp_path / "r.tar", options(), uncompressed_layers=True)
    )
    assert tagged_store.names == tagged_reg.names
    names_files = {"index.json", "manifest.json", "repositories"}
    for member, data in tagged_store.data.items():
        if member not in names_files:
            assert tagged_reg.data[member] == data, member


async def test_a_second_push_uploads_nothing(family: Family, target: Registry, prefix: str) -> None:
    to = f"{target.host}/{prefix}"
    first = await _push(NAMES, to, family.root)
    assert first.blobs_uploaded > 0 and first.blobs_skipped == 0
    mark = len(settled_requests(target))
    again = await _push(NAMES, to, family.root)
    seen = traffic_since(target, mark)
    assert seen.upload_starts == 0 and seen.upload_bodies == 0 and seen.mounts() == 0
    assert (again.blobs_uploaded, again.bytes_uploaded, again.blobs_mounted) == (0, 0, 0)
    # Every blob of every repository was found in place: 2 repositories x (3 + 2 configs)...
    assert again.blobs_skipped == first.blobs_uploaded + first.blobs_mounted
    assert [(i.name, i.digest) for i in again.images] == [(i.name, i.digest) for i in first.images]


async def test_a_base_layer_shared_by_repositories_is_uploaded_once_and_mounted(
    family: Family, target: Registry, prefix: str
) -> None:
    mark = len(settled_requests(target))
    names = ["app:1.0", "tools", "127.0.0.1:5000/other:v1"]
    result = await _push(names, f"{target.host}/{prefix}", family.root)
    seen = traffic_since(target, mark)
    base = family.layers["base"].digest
    assert seen.commits(base) == 1
    assert seen.mounts(base) == 2  # into the two repositories that did not get the upload
    l1 = family.layers["l1"].digest  # app:1.0 and other:v1
    assert seen.commits(l1) == 1 and seen.mounts(l1) == 1
    assert result.blobs_mounted == seen.mounts() == 3
    # Every distinct blob went up once: base, l1, l3, l2 (compressed), l4, three configs.
    assert result.blobs_uploaded == seen.upload_starts == 8


async def test_compression_choices_are_deterministic(
    family: Family, target: Registry, prefix: str
) -> None:
    host = target.host
    gz1 = await _push(["app:2.0"], f"{host}/{prefix}-a", family.root)
    gz2 = await _push(["app:2.0"], f"{host}/{prefix}-b", family.root)
    assert gz1.images[0].digest == gz2.images[0].digest  # the same bytes, the same digests
    zst = await _push(["app:2.0"], f"{host}/{prefix}-z", family.root, compress_layers="zstd")
    raw = await _push(["app:2.0"], f"{host}/{prefix}-n", family.root, compress_layers="none")
    assert raw.images[0].digest == family.images["app2"].digest  # pushed as stored
    assert len({gz1.images[0].digest, zst.images[0].digest, raw.images[0].digest}) == 3
    _, manifest = _manifest(target, f"{prefix}-z/library/app", "2.0")
    last = manifest["layers"][-1]
    assert last["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert {i.id for i in (*gz1.images, *zst.images, *raw.images)} == {
        family.images["app2"].config_digest
    }


async def test_zstd_for_a_docker_manifest_is_refused_before_anything_is_sent(
    target: Registry, prefix: str, tmp_path: Path
) -> None:
    from hatchway.testing import LayoutBuilder

    b = LayoutBuilder(tmp_path / "store")
    image = b.image([b.layer({"a": b"plain\n"}, compression="none")], docker=True)
    b.tag(image, "plain:1")
    b.save()
    mark = len(settled_requests(target))
    with pytest.raises(HatchwayError, match="cannot describe zstd layers"):
        await _push(["plain:1"], f"{target.host}/{prefix}", b.root, compress_layers="zstd")
    assert traffic_since(target, mark).requests == []
    ok = await _push(["plain:1"], f"{target.host}/{prefix}", b.root)  # gzip fits it
    assert ok.images[0].id == image.config_digest


async def test_names_by_digest_and_by_id_are_pushed_by_digest(
    family: Family, target: Registry, prefix: str
) -> None:
    app1 = family.images["app1"]
    by_digest = f"app@{app1.digest}"
    result = await _push([by_digest], f"{target.host}/{prefix}", family.root)
    assert [i.name for i in result.images] == [f"{target.host}/{prefix}/library/app@{app1.digest}"]
    by_id = await _push([app1.config_digest[:19]], f"{target.host}/{prefix}/byid", family.root)
    assert [i.name for i in by_id.images] == [f"{target.host}/{prefix}/byid@{app1.digest}"]
    assert _manifest(target, f"{prefix}/byid", app1.digest)[0] == 200
    assert tags_of(target, f"{prefix}/byid") == []  # by digest: no tag written
    with pytest.raises(HatchwayError, match="named only by its ID"):
        await _push([app1.config_digest], target.host, family.root)


async def test_one_image_under_an_exact_name(family: Family, target: Registry, prefix: str) -> None:
    result = await _push(["app:1.0"], f"docker://{target.host}/{prefix}/renamed:v9", family.root)
    assert [i.name for i in result.images] == [f"{target.host}/{prefix}/renamed:v9"]
    with pytest.raises(HatchwayError, match="names one image, but the names given are 2 images"):
        await _push(["app"], f"{target.host}/{prefix}/renamed:v9", family.root)


async def test_two_images_for_one_tag_are_refused(
    family: Family, target: Registry, prefix: str, tmp_path: Path
) -> None:
    from hatchway.testing import LayoutBuilder

    b = LayoutBuilder(tmp_path / "store")
    one = b.image([b.layer({"a": b"1"})])
    two = b.image([b.layer({"a": b"2"})])
    b.tag(one, "docker.io/team/app:1")
    b.tag(two, "127.0.0.1:5000/team/app:1")
    b.save()
    with pytest.raises(HatchwayError, match=f"two images would be pushed to {prefix}/team/app:1"):
        await _push(["team/app:1", "127.0.0.1:5000/team/app:1"], f"{target.host}/{prefix}", b.root)


async def test_push_from_another_registry(
    lab: Lab, target: Registry, skopeo: Skopeo, prefix: str, tmp_path: Path
) -> None:
    src = lab.registry.host
    names = [
        f"docker://{src}/hw/oci:1",
        f"docker://{src}/hw/docker:1",
        f"docker://{src}/hw/multi:1",
    ]
    result = await _push(names, f"{target.host}/{prefix}")
    assert [i.name for i in result.images] == [
        f"{target.host}/{prefix}/hw/oci:1",
        f"{target.host}/{prefix}/hw/docker:1",
        f"{target.host}/{prefix}/hw/multi:1",
    ]
    images = lab.images.images
    # A multi-platform image is pushed as the one platform manifest selected, as pull stores it.
    assert result.images[2].digest == images["multi:native"].digest
    assert result.images[1].digest == images["hw/docker:1"].digest
    for n, image in enumerate(result.images):
        assert read_back(skopeo, image.name, tmp_path / f"o{n}").image_id == image.id


async def test_within_one_registry_blobs_are_mounted_from_the_source_repository(
    family: Family, target: Registry, prefix: str
) -> None:
    await _push(["app:1.0"], f"{target.host}/{prefix}-src", family.root)
    mark = len(settled_requests(target))
    name = f"docker://{target.host}/{prefix}-src/library/app:1.0"
    result = await _push([name], f"{target.host}/{prefix}-copy")
    seen = traffic_since(target, mark)
    assert (result.blobs_uploaded, result.blobs_mounted) == (0, 3)  # two layers and the config
    assert seen.upload_starts == 0 and seen.mounts() == 3
    assert seen.blob_reads() == 1  # the config, read to resolve the name; no layer is read
    status, _ = _manifest(target, f"{prefix}-copy/{prefix}-src/library/app", "1.0")
    assert status == 200


async def test_a_bundle_pushes_as_the_store_would(
    family: Family, target: Registry, prefix: str, tmp_path: Path
) -> None:
    """The air gap's far side: a compressed bundle pushed straight from the archive
    (``docker-archive:``) lands as a push from the store the bundle was saved from — the same
    manifest digests under the same names — and saved back it holds the very same content
    (configs, layers) as the store."""
    bundle = tmp_path / "bundle.tar.zst"
    await hatchway.save(NAMES, bundle, store=family.root)
    result = await _push([f"docker-archive:{bundle}"], f"{target.host}/{prefix}")
    from_store = await _push(NAMES, f"{target.host}/{prefix}-store", family.root)

    def pushed(r: PushResult, to: str) -> dict[str, str]:
        return {i.name.removeprefix(to): i.digest for i in r.images}

    assert pushed(result, f"{target.host}/{prefix}") == pushed(
        from_store, f"{target.host}/{prefix}-store"
    )
    again = await save_from_registry(
        [f"docker://{i.name}" for i in result.images],
        tmp_path / "again.tar",
        options(),
        uncompressed_layers=True,
    )
    plain = await save_archive(NAMES, tmp_path / "plain.tar", family.root, uncompressed_layers=True)

    def blobs(raw: bytes) -> dict[str, bytes]:
        return {k: v for k, v in read_archive(raw).data.items() if k.startswith("blobs/")}

    assert blobs(again) == blobs(plain)


async def test_mounting_from_the_source_repository_works_through_a_wrapper(
    family: Family, target: Registry, prefix: str
) -> None:
    """The source repository is a declared capability of the blob source, forwarded by every
    wrapper: behind a wrapper (here the tests' probe) blobs are still mounted, not uploaded."""
    from hatchway.transports.registry.source import RegistryStore

    await _push(["app:1.0"], f"{target.host}/{prefix}-src", family.root)
    name = f"docker://{target.host}/{prefix}-src/library/app:1.0"
    store = ProbeStore(RegistryStore(options()))
    mark = len(settled_requests(target))
    try:
        result = await _push([name], f"{target.host}/{prefix}-wrapped", store)
    finally:
        await store.aclose()
    seen = traffic_since(target, mark)
    assert (result.blobs_uploaded, result.blobs_mounted) == (0, 3)
    assert seen.upload_starts == 0 and store.reads == {}
