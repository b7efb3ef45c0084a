"""Outputs: where an archive goes — a path (atomically), a file descriptor, or a stream.

A path output is written to a temp file in the target's own directory (so the final
``os.replace`` is a rename within one file system), given the mode a newly created file would
get (``0666`` less the umask), optionally flushed to disk (``fsync``), and renamed over the
target.  On any error or cancellation the temp file is removed under a shielded scope and an
existing target is left untouched.  Readers therefore see the old file or the whole new one,
never a part.  Without ``fsync`` (the default, as with ``docker save``) a power loss right
after the rename may still lose the data the kernel had not written back yet.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import ByteSendStream

from hatchway.engine.filewriter import FileSink
from hatchway.engine.writer import FdSink, Sink, StreamSink
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


class PathOutput:
    """The archive at ``path``, written atomically.  Discards everything on error."""

    discards_on_error = True

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self._path = path
        self._fsync = fsync

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[FileSink]:
        async with atomic_file(self._path, fsync=self._fsync) as fd:
            yield FileSink(fd, str(self._path))


class FdOutput:
    """An open file descriptor owned by the caller (stdout for the CLI); not closed here."""

    discards_on_error = False

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Sink]:
        yield FdSink(
            self._fd, "standard output" if self._fd == 1 else f"file descriptor {self._fd}"
        )


class StreamOutput:
    """An anyio byte stream owned by the caller; not closed here."""

    discards_on_error = False

    def __init__(self, stream: ByteSendStream) -> None:
        self._stream = stream

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Sink]:
        yield StreamSink(self._stream)


@asynccontextmanager
async def atomic_file(path: Path, *, fsync: bool = False) -> AsyncIterator[int]:
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
        await anyio.to_thread.run_sync(_commit, fd, temp, path, fsync)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_discard, fd, temp)
        raise


def _commit(fd: int, temp: str, path: Path, fsync: bool) -> None:
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        if fsync:
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
