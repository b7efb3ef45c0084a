"""Shared fixtures: every async test runs on asyncio and on trio; peers come from tests/peers/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import Family, build_family

if TYPE_CHECKING:
    from tests.peers import Registry
    from tests.registry_support import Lab
    from tests.tls_support import TlsLab

pytest_plugins = ["tests.peers"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def family(tmp_path: Path) -> Family:
    """A store of images sharing ancestors at several depths (see ``support.build_family``)."""
    return build_family(tmp_path / "store")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A real registry on loopback holding the registry tests' images (registry_support.Lab)."""
    # Imported here: registry_support imports tests.peers, which pytest must load first as a
    # plugin (pytest_plugins below) so that its asserts are rewritten.
    from tests.registry_support import lab_session

    yield from lab_session(tmp_path_factory)


@pytest.fixture(scope="session")
def tls_lab(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    """TLS registries serving the lab's images, started on first use (tls_support.TlsLab)."""
    from tests.tls_support import TlsLab

    tls = TlsLab(tmp_path_factory.mktemp("tls-lab"), lab.registry.root)
    try:
        yield tls
    finally:
        tls.close()


@pytest.fixture(scope="session")
def push_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An empty registry to push into (its access log says what it was sent); each test
    pushes under its own ``prefix``."""
    from tests.peers import start_registry

    registry = start_registry(tmp_path_factory.mktemp("push-target"))
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A repository prefix no other test uses (see ``push_support.unique_prefix``)."""
    from tests.push_support import unique_prefix

    return unique_prefix(request)
