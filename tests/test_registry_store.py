"""The registry store against a real registry (docker-registry): names, formats, platforms,
verification and the cross-check with skopeo."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hatchway import Selection
from hatchway.errors import NoSuchImage, PlatformNotFound, StoreError
from hatchway.model import Platform
from hatchway.reference import Transport, parse_query
from hatchway.transports.registry.source import RegistryStore
from hatchway.transports.router import Router
from tests.peers import Skopeo
from tests.registry_support import Lab, options, save_from_registry
from tests.support import read_archive, uncompressed

pytestmark = [pytest.mark.anyio, pytest.mark.peers]


async def test_docker_schema2_image_records_the_registry_host_in_its_tag(
    lab: Lab, tmp_path: Path
) -> None:
    raw = await save_from_registry([lab.images.name("hw/docker:1")], tmp_path / "a.tar", options())
    archive = read_archive(raw)
    manifest = archive.json("manifest.json")
    assert manifest[0]["RepoTags"] == [f"{lab.registry.host}/hw/docker:1"]
    index = archive.json("index.json")
    assert index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": f"{lab.registry.host}/hw/docker:1",
        "org.opencontainers.image.ref.name": "1",
    }
    built = lab.images.images["hw/docker:1"]
    assert manifest[0]["Config"] == "blobs/sha256/" + built.config_digest.removeprefix("sha256:")


async def test_oci_image_with_gzip_zstd_and_plain_layers_verifies_every_diff_id(
    lab: Lab, tmp_path: Path
) -> None:
    raw = await save_from_registry([lab.images.name("hw/oci:1")], tmp_path / "a.tar", options())
    archive = read_archive(raw)
    [entry] = archive.json("manifest.json")
    config = archive.json(entry["Config"])
    layers = [hashlib.sha256(uncompressed(archive.data[p])).hexdigest() for p in entry["Layers"]]
    assert ["sha256:" + h for h in layers] == config["rootfs"]["diff_ids"]
    # Kept as the registry stores them: each blob is named after its own digest.
    for path in entry["Layers"]:
        assert hashlib.sha256(archive.data[path]).hexdigest() == path.removeprefix("blobs/sha256/")
    assert "sha256:" + hashlib.sha256(archive.data[entry["Config"]]).hexdigest() == (
        lab.images.images["hw/oci:1"].config_digest
    )


async def test_tagless_name_means_latest(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(NoSuchImage, match=r"No such image: docker://.*/hw/oci$"):
        await save_from_registry([lab.images.name("hw/oci")], tmp_path / "a.tar", options())
    assert not (tmp_path / "a.tar").exists()


async def test_digest_reference_records_no_tag(lab: Lab, tmp_path: Path) -> None:
    digest = lab.images.images["hw/oci:1"].digest
    name = f"docker://{lab.registry.host}/hw/oci@{digest}"
    archive = read_archive(await save_from_registry([name], tmp_path / "a.tar", options()))
    assert archive.json("manifest.json")[0]["RepoTags"] is None


async def test_index_and_manifest_list_pick_the_host_platform_by_default(lab: Lab) -> None:
    store = RegistryStore(options())
    try:
        for name in ("hw/multi:1", "hw/multi-docker:1"):
            [image] = await store.resolve(parse_query(lab.images.name(name)), Selection())
            assert Platform.host().matches(image.config.platform)
        native = lab.images.images["multi:native"]
        [image] = await store.resolve(parse_query(lab.images.name("hw/multi:1")), Selection())
        assert image.manifest_digest == native.digest
    finally:
        await store.aclose()


async def test_an_explicit_platform_selects_that_manifest(lab: Lab) -> None:
    foreign = lab.images.images["multi:foreign"]
    assert foreign.platform is not None
    wanted = Platform("linux", foreign.platform["architecture"], "v8")
    store = RegistryStore(options())
    try:
        [image] = await store.resolve(
            parse_query(lab.images.name("hw/multi:1")), Selection.of(wanted)
        )
        assert image.manifest_digest == foreign.digest
        with pytest.raises(PlatformNotFound, match="s390x"):
            await store.resolve(
                parse_query(lab.images.name("hw/multi:1")), Selection.of(Platform("linux", "s390x"))
            )
    finally:
        await store.aclose()


async def test_missing_tag_and_missing_repository_are_no_such_image(
    lab: Lab, tmp_path: Path
) -> None:
    for name in ("hw/oci:nope", "hw/nothing-here:1"):
        with pytest.raises(NoSuchImage) as info:
            await save_from_registry([lab.images.name(name)], tmp_path / "a.tar", options())
        assert info.value.name == lab.images.name(name)
        assert isinstance(info.value.__cause__, StoreError)
    assert not (tmp_path / "a.tar").exists()


async def test_router_refuses_bare_names_without_a_local_store(tmp_path: Path) -> None:
    store = Router({Transport.DOCKER: RegistryStore(options())})
    try:
        with pytest.raises(StoreError, match="docker://"):
            await store.resolve(parse_query("busybox:latest"), Selection())
    finally:
        await store.aclose()


async def test_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    from tests.peers import free_port

    name = f"docker://127.0.0.1:{free_port()}/app:1"
    with pytest.raises(StoreError) as info:
        await save_from_registry([name], tmp_path / "a.tar", options())
    text = str(info.value)
    assert "cannot connect" in text and "repository app" in text
    assert not (tmp_path / "a.tar").exists()


async def test_same_archive_at_every_jobs_value(lab: Lab, tmp_path: Path) -> None:
    names = [lab.images.name(n) for n in ("hw/family-a:1", "hw/family-c:1", "hw/oci:1")]
    one = await save_from_registry(names, tmp_path / "1.tar", options(), jobs=1)
    many = await save_from_registry(names, tmp_path / "16.tar", options(), jobs=16)
    assert one == many


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_skopeo_sees_the_same_config_and_diff_ids(
    lab: Lab, skopeo: Skopeo, tmp_path: Path
) -> None:
    # (skopeo 1.9 cannot write zstd layers into a docker-archive, so hw/oci is left out)
    for name in ("hw/docker:1", "hw/family-c:1", "hw/big:1"):
        slug = name.replace("/", "_").replace(":", "_")
        theirs = tmp_path / f"{slug}-skopeo.tar"
        skopeo("copy", "--src-tls-verify=false", lab.images.name(name), f"docker-archive:{theirs}")
        ours = await save_from_registry(
            [lab.images.name(name)],
            tmp_path / f"{slug}.tar",
            options(),
            archive_format="docker-1.10",
        )
        mine = read_archive(ours)
        peer = read_archive(theirs.read_bytes())
        [m_entry], [p_entry] = mine.json("manifest.json"), peer.json("manifest.json")
        assert mine.data[m_entry["Config"]] == peer.data[p_entry["Config"]]
        m_diffs = [hashlib.sha256(mine.data[p]).hexdigest() for p in m_entry["Layers"]]
        p_diffs = [hashlib.sha256(peer.data[p]).hexdigest() for p in p_entry["Layers"]]
        assert m_diffs == p_diffs
        # ... and skopeo accepts ours, verifying every diffID on the way.
        skopeo("copy", f"docker-archive:{tmp_path / slug}.tar", f"oci:{tmp_path / slug}-oci:t")
        assert json.loads((tmp_path / f"{slug}-oci" / "index.json").read_text())["manifests"]
