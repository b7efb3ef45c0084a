"""Atomic output: the archive appears under its name complete, or not at all.

The archive is written to a temp file in the target's own directory (so the final
``os.replace`` is a rename within one file system), flushed to disk, given the mode a newly
created file would get (``0666`` less the umask), and renamed over the target.  On any error
or cancellation the temp file is removed under a shielded scope and an existing target is
left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from hatchway.errors import OutputError


def check_destination(path: Path) -> None:
    """Fail early, before any fetch, when ``path`` cannot become the archive."""
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {parent} is not writable")


@asynccontextmanager
async def atomic_file(path: Path) -> AsyncIterator[int]:
    """Yield a file descriptor; on clean exit the written file replaces ``path``."""
    try:
        fd, temp = await anyio.to_thread.run_sync(
            lambda: tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=".hatchway-tmp", dir=path.parent
            )
        )
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        yield fd
        await anyio.to_thread.run_sync(_commit, fd, temp, path)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_discard, fd, temp)
        raise


def _commit(fd: int, temp: str, path: Path) -> None:
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def _discard(fd: int, temp: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
