"""Bundles with real peers (docs/peers.md): compressed bundles load into Docker and podman;
archives written by Docker, podman and skopeo are read back, re-saved with the same image IDs
and layer bytes, verified and loaded.  The images hold Debian's static busybox, so they run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest

import hatchway
from hatchway.testing.layout import LayoutBuilder, Symlink
from tests.archive_support import layer_bytes, members
from tests.peers import DockerDaemon, Podman, Skopeo, static_busybox

pytestmark = [pytest.mark.peers]

IMAGES = {
    "hatchway-test/bundle:one": b"bundle one\n",
    "hatchway-test/bundle:two": b"bundle two\n",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles") / "store"
    b = LayoutBuilder(root)
    base = b.layer(
        {
            "bin/busybox": static_busybox().read_bytes(),
            "bin/sh": Symlink("busybox"),
            "bin/cat": Symlink("busybox"),
            "etc/": None,
        },
        compression="gzip",
    )
    for i, (name, text) in enumerate(IMAGES.items()):
        top = b.layer({"etc/hello": text}, compression=("zstd", "none")[i])
        b.tag(b.image([base, top], cmd=["cat", "/etc/hello"], created="2024-01-01T00:00:00Z"), name)
    b.save()
    return root


def save(store: Path, out: Path, names: list[str] | None = None, **options: object) -> Path:
    async def run() -> None:
        await hatchway.save(names or list(IMAGES), out, store=store, **options)  # type: ignore[arg-type]

    anyio.run(run)
    return out


def resave(name: str, out: Path, **options: object) -> Path:
    async def run() -> None:
        await hatchway.save([name], out, **options)  # type: ignore[arg-type]

    anyio.run(run)
    return out


def image_ids(path: Path) -> list[str]:
    return sorted(
        "sha256:" + e["Config"].rsplit("/", 1)[-1].removesuffix(".json")
        for e in json.loads(members(path)["manifest.json"])
    )


def oci_image_ids(path: Path) -> list[str]:
    """The config digests an OCI layout (a directory or a tar) records: converting to OCI,
    skopeo and podman rewrite the config, so these are the IDs a re-save must keep."""
    if path.is_dir():
        files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    else:
        files = members(path)
    ids = []
    for entry in json.loads(files["index.json"])["manifests"]:
        manifest = json.loads(files["blobs/sha256/" + entry["digest"][7:]])
        ids.append(manifest["config"]["digest"])
    return sorted(ids)


def verify_ok(path: Path) -> hatchway.VerifyReport:
    report = anyio.run(hatchway.verify, path)
    assert report.ok, report.problem
    return report


# -- compressed bundles into real loaders --------------------------------------------------------


def test_docker_loads_a_gzip_bundle(store: Path, dockerd: DockerDaemon, tmp_path: Path) -> None:
    """Docker 20.10 reads no zstd layer (Docker 23 does): a store with one is saved for it
    with its layers uncompressed."""
    bundle = save(store, tmp_path / "bundle.tar.gz", uncompressed_layers=True)
    dockerd.remove_all_images()
    dockerd.docker("load", "-i", str(bundle))
    for name, text in IMAGES.items():
        ran = dockerd.docker("run", "--rm", "--network", "none", name, "cat", "/etc/hello")
        assert ran.stdout.encode() == text


def test_docker_20_loads_layers_as_stored_but_not_zstd(
    store: Path, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """The default bundle keeps the stored blobs: Docker 20.10 loads the gzip (and plain)
    ones and runs the image, and refuses the image with a zstd layer (measured; Docker 23
    and containerd read zstd)."""
    two = list(IMAGES)[1]  # a gzip base and an uncompressed top layer
    bundle = save(store, tmp_path / "two.tar", [two])
    dockerd.remove_all_images()
    dockerd.docker("load", "-i", str(bundle))
    ran = dockerd.docker("run", "--rm", "--network", "none", two, "cat", "/etc/hello")
    assert ran.stdout.encode() == IMAGES[two]
    one = next(iter(IMAGES))  # its top layer is zstd
    zstd = save(store, tmp_path / "one.tar", [one])
    refused = dockerd.docker("load", "-i", str(zstd), check=False)
    assert refused.returncode != 0


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
def test_podman_loads_compressed_bundles(
    store: Path, podman: Podman, tmp_path: Path, suffix: str
) -> None:
    # podman 4.3 (containers/image 5.23) cannot read a gzip docker-archive holding more than
    # one image, whoever compressed it (GNU gzip too; docs/peers.md): one image for gzip.
    names = list(IMAGES)[:1] if suffix == ".tar.gz" else list(IMAGES)
    bundle = save(store, tmp_path / f"bundle{suffix}", names)
    podman.remove_all_images()
    loaded = podman.load(bundle)
    assert loaded.returncode == 0, loaded.stderr
    held = podman.image_names()
    for name in names:
        assert any(h.endswith(name) for h in held), (name, held)


def test_docker_cannot_read_zstd_but_verify_can(store: Path, tmp_path: Path) -> None:
    bundle = save(store, tmp_path / "b.tar.zst")
    report = verify_ok(bundle)
    assert report.compression == "zstd" and len(report.images) == 2


# -- archives written by others, read back --------------------------------------------------------


def _check_resave(original: Path, source_name: str, tmp_path: Path, reference: Path) -> None:
    """Re-saving what a peer wrote keeps the image IDs and the layer bytes, the archive
    verifies, and it loads into a store from which it saves the same again."""
    tmp_path.mkdir(exist_ok=True)
    again = resave(source_name, tmp_path / "again.tar")
    assert image_ids(again) == image_ids(reference)
    assert layer_bytes(again) == layer_bytes(reference)
    verify_ok(original)
    store = tmp_path / "loaded"
    result = anyio.run(lambda: hatchway.load([source_name], store=store))
    assert {i.id for i in result.images} == set(image_ids(reference))
    from_store = tmp_path / "from-store.tar"

    async def run() -> None:
        await hatchway.save([i.id for i in result.images], from_store, store=store)

    anyio.run(run)
    assert layer_bytes(from_store) == layer_bytes(reference)


def test_docker_save_reads_back(store: Path, dockerd: DockerDaemon, tmp_path: Path) -> None:
    reference = save(store, tmp_path / "ref.tar", uncompressed_layers=True)  # Docker 20.10
    dockerd.remove_all_images()
    dockerd.docker("load", "-i", str(reference))
    written = tmp_path / "docker-save.tar"
    dockerd.docker("save", "-o", str(written), *IMAGES)
    _check_resave(written, f"docker-archive:{written}", tmp_path, reference)


def test_podman_save_reads_back(store: Path, podman: Podman, tmp_path: Path) -> None:
    reference = save(store, tmp_path / "ref.tar")
    podman.remove_all_images()
    podman.load(reference)
    names = [n for n in podman.image_names() if "bundle" in n]
    assert len(names) == 2, names
    one = tmp_path / "podman-one.tar"
    podman("save", "-o", str(one), names[0])
    again = resave(f"docker-archive:{one}", tmp_path / "one-again.tar")
    assert len(image_ids(again)) == 1 and image_ids(again)[0] in image_ids(reference)
    verify_ok(one)
    multi = tmp_path / "podman-multi.tar"
    podman("save", "-m", "-o", str(multi), *names)
    _check_resave(multi, f"docker-archive:{multi}", tmp_path / "m", reference)
    oci = tmp_path / "podman.oci.tar"
    podman("save", "--format", "oci-archive", "-o", str(oci), names[0])
    got = resave(f"oci-archive:{oci}", tmp_path / "oci-again.tar")
    assert image_ids(got) == oci_image_ids(oci)
    assert set(layer_bytes(got)) <= set(layer_bytes(reference))
    verify_ok(oci)


def test_skopeo_copies_read_back(store: Path, skopeo: Skopeo, tmp_path: Path) -> None:
    reference = save(store, tmp_path / "ref.tar")
    name = next(iter(IMAGES))
    one_ref = save(store, tmp_path / "one-ref.tar", [name])
    targets = {
        "docker-archive": tmp_path / "skopeo.tar",
        "oci-archive": tmp_path / "skopeo.oci.tar",
        "oci": tmp_path / "skopeo-oci",
    }
    for transport, path in targets.items():
        skopeo("copy", f"docker-archive:{reference}:{name}", f"{transport}:{path}:{name}")
        again = resave(f"{transport}:{path}:{name}", tmp_path / f"{transport}-again.tar")
        expected = image_ids(one_ref) if transport == "docker-archive" else oci_image_ids(path)
        assert image_ids(again) == expected, transport
        assert layer_bytes(again) == layer_bytes(one_ref), transport
        if transport != "oci":
            verify_ok(path)


def test_hatchway_formats_read_back_through_skopeo(
    store: Path, skopeo: Skopeo, tmp_path: Path
) -> None:
    """What hatchway re-saves from any of its formats is what skopeo verifies and copies."""
    reference = save(store, tmp_path / "ref.tar")
    for fmt in ("docker", "docker-1.10", "docker-legacy"):
        written = save(store, tmp_path / f"{fmt}.tar.zst", format=fmt)
        again = resave(f"docker-archive:{written}", tmp_path / f"{fmt}-again.tar")
        assert layer_bytes(again) == layer_bytes(reference)
        if fmt != "docker-legacy":  # the legacy layout has no config: new, stable IDs
            assert image_ids(again) == image_ids(reference)
        for i, name in enumerate(IMAGES):
            skopeo("copy", f"docker-archive:{again}:{name}", f"oci:{tmp_path / fmt}:t{i}")
        digests = {hashlib.sha256(b).hexdigest() for b in layer_bytes(again).values()}
        assert len(digests) == 3
