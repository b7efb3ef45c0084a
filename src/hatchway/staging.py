"""Staging directories: the private place where one copy keeps what it must hold on disk until
its end — an archive's verified layers, a push's compressed or fetched ones.

A staging directory (``.hatchway-staging-*``) belongs to one copy, lives under ``--tmpdir`` or
beside the output, and is removed with everything in it however the copy ends (shielded from
cancellation).  What goes into it is each destination's business
(``transports/archive/staging.py``, ``transports/registry/staged.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import anyio

from hatchway.errors import OutputError

PREFIX = ".hatchway-staging-"


async def make_staging_dir(parent: str | os.PathLike[str]) -> Path:
    """Create a private staging directory under ``parent``."""
    try:
        path = await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    except OSError as exc:
        raise OutputError(
            f"cannot create a staging directory in {parent}: {exc.strerror}"
        ) from None
    return Path(path)


async def remove_staging_dir(path: Path) -> None:
    """Remove a staging directory and everything in it, even while being cancelled."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
