"""Outputs: where an archive goes — a path (atomically), a file descriptor, or a stream.

A path output is written to a temp file in the target's own directory (so the final
``os.replace`` is a rename within one file system), given the target's mode (or, for a new
file, ``0666`` less the umask), optionally flushed to disk (``fsync``), and renamed over the
target.  On any error or cancellation the temp file is removed under a shielded scope and an
existing target is left untouched.  Readers therefore see the old file or the whole new one,
never a part.  An existing special file (``/dev/null``, a FIFO) cannot be replaced that way:
it is written in place, and, like stdout, only ever receives verified bytes.  Without
``fsync`` (the default, as with ``docker save``) a power loss right after the rename may
still lose the data the kernel had not written back yet.
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


def output_for(path: Path, *, fsync: bool = False) -> PathOutput | DeviceOutput:
    """The output for ``-o path``, checked before any fetch so a bad path fails at once.

    A symlink is followed (the file it names is replaced, the link stays).  An existing
    FIFO, character device or socket (``/dev/null``, a named pipe) is written in place, front
    to back and only with verified bytes, since it cannot be replaced atomically.
    """
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        if path.is_dir():
            raise OutputError(f"{path} is a directory")
        return DeviceOutput(path)
    check_destination(path)
    return PathOutput(path, fsync=fsync)


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


class DeviceOutput:
    """An existing special file (FIFO, device): opened for writing only once all is staged."""

    discards_on_error = False

    def __init__(self, path: Path) -> None:
        self._path = path

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Sink]:
        try:
            fd = await anyio.to_thread.run_sync(os.open, self._path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"cannot write {self._path}: {exc.strerror}") from None
        try:
            yield FdSink(fd, str(self._path))
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


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
    open_fd: int | None = fd
    try:
        yield fd
        await anyio.to_thread.run_sync(_finish, fd, path, fsync)
        open_fd = None  # _finish closed it, also when it failed
        await anyio.to_thread.run_sync(_rename, temp, path)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_discard, open_fd, temp)
        raise


def _finish(fd: int, path: Path, fsync: bool) -> None:
    """Give the temp file the mode the target has (or a new file would get), flush, close."""
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        if fsync:
            os.fsync(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _rename(temp: str, path: Path) -> None:
    try:
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def _discard(fd: int | None, temp: str) -> None:
    if fd is not None:
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
