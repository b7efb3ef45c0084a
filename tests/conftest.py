"""Shared fixtures: every async test runs on asyncio and on trio; peers come from peers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Family, build_family

pytest_plugins = ["tests.peers"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def family(tmp_path: Path) -> Family:
    """A store of images sharing ancestors at several depths (see ``support.build_family``)."""
    return build_family(tmp_path / "store")
