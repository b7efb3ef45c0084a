"""File primitives every transport shares: atomic replacement and in-kernel copies.

* :func:`atomic_file` (async) and :func:`atomic_write` (blocking, for worker threads) write a
  temp file beside the target and ``os.replace`` it over the target only once it is whole, so a
  reader sees the old file or the new one, never a part; on any error or cancellation the temp
  file is removed.  Used for ``-o FILE``, store blobs, ``index.json`` and ``oci-layout``.
* :class:`KernelCopy` copies byte ranges between descriptors without passing them through
  Python: ``copy_file_range``, else ``sendfile``, else ``pread`` + write — remembering per
  destination which one works.

Blocking functions here are meant for worker threads (``anyio.to_thread``); none of them
touches the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from hatchway.errors import OutputError
from hatchway.limits import CHUNK_SIZE

#: errnos that mean "this copy method does not work between these two descriptors".
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}
)


class KernelCopy:
    """Copy byte ranges into one destination descriptor, in the kernel when it can.

    ``copy_file_range`` works between regular files (and, on recent kernels, into pipes);
    ``sendfile`` into pipes and sockets at their current position; ``pread`` + ``pwrite``
    (or ``write``) everywhere.  The first method that fails with "not supported here" is not
    tried again for this destination.
    """

    def __init__(self, dst: int) -> None:
        self.dst = dst
        self._method = "copy_file_range"

    def copy(self, src: int, src_offset: int, count: int, dst_offset: int | None) -> int:
        """Copy up to ``count`` bytes of ``src`` from ``src_offset`` to ``dst_offset`` (or
        the destination's current position when ``None``).  Returns how many bytes were
        copied: 0 only at the end of ``src``.  Raises :class:`OSError`."""
        while True:
            if self._method == "copy_file_range":
                try:
                    return os.copy_file_range(src, self.dst, count, src_offset, dst_offset)
                except OSError as exc:
                    if exc.errno not in _NO_KERNEL_COPY:
                        raise
                    self._method = "sendfile" if dst_offset is None else "pread"
            elif self._method == "sendfile" and dst_offset is None:
                try:
                    return os.sendfile(self.dst, src, src_offset, count)
                except OSError as exc:
                    if exc.errno not in _NO_KERNEL_COPY:
                        raise
                    self._method = "pread"
            else:
                data = os.pread(src, min(count, CHUNK_SIZE), src_offset)
                if dst_offset is None:
                    write_all(self.dst, data)
                else:
                    pwrite_all(self.dst, data, dst_offset)
                return len(data)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written at ``offset``."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


@dataclass(frozen=True, slots=True)
class TempFile:
    """The temp file of :func:`atomic_temp`: its descriptor and its path."""

    fd: int
    path: str


@asynccontextmanager
async def atomic_file(
    path: Path, *, fsync: bool = False, mode: int | None = None
) -> AsyncIterator[int]:
    """Yield a descriptor of a new temp file beside ``path``; a clean exit renames it over
    ``path``, any exception (or cancellation) removes it and leaves ``path`` untouched.

    The file gets ``mode``, else the mode ``path`` has, else ``0666`` less the umask (what a
    plain ``open`` would give), and is flushed to disk first when ``fsync``.
    """
    async with atomic_temp(path, fsync=fsync, mode=mode) as temp:
        yield temp.fd


@asynccontextmanager
async def atomic_temp(
    path: Path, *, fsync: bool = False, mode: int | None = None
) -> AsyncIterator[TempFile]:
    """:func:`atomic_file`, yielding the temp file's path too (to read back what was written)."""
    atomic = AtomicTemp(path, fsync=fsync, mode=mode)
    temp = await atomic.open()
    try:
        yield temp
        await atomic.finish()
    except BaseException:
        await atomic.discard()
        raise


class AtomicTemp:
    """A temp file beside ``path``: :meth:`finish` renames it over ``path`` (see
    :func:`atomic_file`), :meth:`discard` removes it.  For a caller whose decision to keep the
    file is made elsewhere than where it was opened."""

    def __init__(self, path: Path, *, fsync: bool = False, mode: int | None = None) -> None:
        self.path = path
        self._fsync = fsync
        self._mode = mode
        self._fd: int | None = None
        self._temp: str | None = None

    async def open(self) -> TempFile:
        try:
            fd, temp = await anyio.to_thread.run_sync(_mkstemp, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None
        self._fd, self._temp = fd, temp
        return TempFile(fd, temp)

    async def finish(self) -> None:
        """Give the file its mode, flush it if asked, and rename it over the target."""
        assert self._fd is not None
        assert self._temp is not None
        fd, self._fd = self._fd, None
        await anyio.to_thread.run_sync(_finish, fd, self.path, self._fsync, self._mode)
        await anyio.to_thread.run_sync(_rename, self._temp, self.path)
        self._temp = None

    async def discard(self) -> None:
        """Remove the temp file (idempotent; never raises; runs shielded)."""
        fd, temp, self._fd, self._temp = self._fd, self._temp, None, None
        if temp is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, fd, temp)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Blocking: replace ``path`` with ``data`` atomically (flushed to disk first)."""
    fd, temp = _mkstemp(path)
    try:
        write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, path)
    except BaseException:
        _discard(fd if fd >= 0 else None, temp)
        raise


def _mkstemp(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".hatchway-tmp", dir=path.parent)


def _finish(fd: int, path: Path, fsync: bool, mode: int | None) -> None:
    try:
        if mode is None:
            try:
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~umask()
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


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
