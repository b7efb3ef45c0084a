"""Real loaders accept every archive hatchway writes (docs/formats.md, What loaders check;
docs/peers.md).

For each layout: skopeo copies it into an OCI directory (verifying every diffID; it cannot
read the legacy layout), ``ctr images import`` imports it (containerd cannot read the legacy
layout either), and a real ``docker load`` followed by ``docker run --network none`` prints a
file from each image.  The images share a base layer holding Debian's static busybox.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

import hatchway
from hatchway.testing.layout import LayoutBuilder, Symlink
from tests.peers import Containerd, DockerDaemon, OciImageTool, Skopeo, static_busybox
from tests.support import read_archive

pytestmark = [pytest.mark.peers, pytest.mark.anyio]

IMAGES = {
    "hatchway-test/hello:one": b"hello one\n",
    "hatchway-test/hello:two": b"hello two\n",
    "127.0.0.1:5999/hatchway-test/other:v1": b"other\n",
}


@pytest.fixture(scope="module")
def busybox_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loaders") / "store"
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
        compression = ("zstd", "none", "gzip")[i]
        top = b.layer({"etc/hello": text}, compression=compression)  # type: ignore[arg-type]
        image = b.image(
            [base, top],
            cmd=["cat", "/etc/hello"],
            docker=i == 2,
            created=f"2024-0{i + 1}-01T00:00:00Z",
        )
        b.tag(image, name)
    b.save()
    return root


@pytest.fixture(scope="module", params=[f.value for f in hatchway.ArchiveFormat])
def archive(
    request: pytest.FixtureRequest, busybox_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    import anyio

    out = tmp_path_factory.mktemp("archives") / f"{request.param}.tar"

    async def save() -> None:
        await hatchway.save(list(IMAGES), out, store=busybox_store, format=request.param)

    anyio.run(save)
    return request.param, out


@pytest.fixture
def anyio_backend() -> str:  # these tests drive subprocesses; one backend is enough
    return "asyncio"


def test_config_names_are_their_sha256(archive: tuple[str, Path]) -> None:
    fmt, path = archive
    parsed = read_archive(path.read_bytes())
    if fmt == "docker-legacy":
        assert "manifest.json" not in parsed.names
        return
    for entry in parsed.json("manifest.json"):
        name = entry["Config"].removeprefix("blobs/sha256/").removesuffix(".json")
        assert hashlib.sha256(parsed.data[entry["Config"]]).hexdigest() == name


def test_skopeo_copies_and_verifies(
    archive: tuple[str, Path], skopeo: Skopeo, tmp_path: Path
) -> None:
    fmt, path = archive
    for i, name in enumerate(IMAGES):
        result = skopeo(
            "copy", f"docker-archive:{path}:{name}", f"oci:{tmp_path / 'oci'}:t{i}", check=False
        )
        if fmt == "docker-legacy":
            # skopeo has no legacy reader (docs/formats.md, The docker-legacy layout)
            assert result.returncode != 0
            return
        assert result.returncode == 0, result.stderr


def test_ctr_imports(archive: tuple[str, Path], containerd: Containerd) -> None:
    fmt, path = archive
    containerd.remove_all_images()
    result = containerd.ctr("images", "import", str(path), check=False)
    if fmt == "docker-legacy":
        assert result.returncode != 0  # containerd has no legacy reader
        return
    assert result.returncode == 0, result.stderr
    names = containerd.image_names()
    assert "docker.io/hatchway-test/hello:one" in names
    assert "docker.io/hatchway-test/hello:two" in names
    assert "127.0.0.1:5999/hatchway-test/other:v1" in names


def test_docker_loads_and_runs(archive: tuple[str, Path], dockerd: DockerDaemon) -> None:
    fmt, path = archive
    dockerd.remove_all_images()
    loaded = dockerd.docker("load", "-i", str(path))
    assert loaded.returncode == 0, loaded.stderr
    for name, text in IMAGES.items():
        ran = dockerd.docker("run", "--rm", "--network", "none", name, "cat", "/etc/hello")
        assert ran.stdout.encode() == text, (fmt, name)


def test_docker_layout_is_a_valid_oci_layout(
    archive: tuple[str, Path], tmp_path: Path, oci_image_tool: OciImageTool
) -> None:
    fmt, path = archive
    if fmt != "docker":
        return
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "layout", filter="tar")
    # Without --ref the tool validates the whole layout.  (Its --ref name=... lookup is
    # unreliable in 1.0.0: it reports "not unique" for unique names.)
    result = oci_image_tool.validate(tmp_path / "layout")
    assert "Validation succeeded" in result.stdout + result.stderr
