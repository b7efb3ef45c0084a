"""Session-scoped pytest fixtures, one per peer; each gets its own temp dir, removed at the end."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.peers.containerd_daemon import Containerd, start_containerd
from tests.peers.docker_daemon import DockerDaemon, start_dockerd
from tests.peers.image_tools import OciImageTool, Skopeo
from tests.peers.podman_tool import Podman
from tests.peers.process import PeerError
from tests.peers.registry_server import Registry, start_registry


def _unmount_under(directory: Path) -> None:
    """Lazily unmount anything still mounted at or below ``directory`` (left by a killed daemon)."""
    prefix = str(directory.resolve())
    mounts: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                point = fields[1].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_tree(directory: Path) -> None:
    _unmount_under(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise PeerError(f"could not remove {directory}")


_Service = TypeVar("_Service", Registry, Containerd, DockerDaemon, Podman)


def _service(
    factory: pytest.TempPathFactory, name: str, start: Callable[[Path], _Service]
) -> Iterator[_Service]:
    """Start a service in its own temp dir; stop it and remove the dir at session end."""
    workdir = factory.mktemp(name)
    handle = start(workdir)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_tree(workdir)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry on 127.0.0.1 (``.host``, ``.url``, ``.root``, ``.ref()``)."""
    yield from _service(tmp_path_factory, "registry", start_registry)


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd; ``containerd.ctr(...)`` uses namespace ``hatchwaytest``."""
    yield from _service(tmp_path_factory, "ctrd", start_containerd)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A private dockerd; ``dockerd.docker(...)`` runs the Debian docker CLI against it."""
    yield from _service(tmp_path_factory, "dockerd", start_dockerd)


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Skopeo]:
    """``skopeo(*args, check=True)`` with a private permissive policy file."""
    workdir = tmp_path_factory.mktemp("skopeo")
    try:
        yield Skopeo(workdir)
    finally:
        _remove_tree(workdir)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """``podman(*args)``: daemonless podman with all its state in a private temp dir."""
    yield from _service(tmp_path_factory, "podman", Podman)


@pytest.fixture(scope="session")
def oci_image_tool() -> OciImageTool:
    """``oci_image_tool.validate(layout_dir)`` or ``oci_image_tool(*args)``."""
    return OciImageTool()
