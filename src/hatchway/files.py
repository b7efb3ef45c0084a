"""File primitives every transport shares: atomic replacement and in-kernel copies.

* :func:`atomic_file` (async) and :func:`atomic_write` (blocking, for worker threads) write a
  temp file beside the target and ``os.replace`` it over the target only once it is whole, so a
  reader sees the old file or the new one, never a part; on any error or cancellation the temp
  file is removed.  Used for ``-o FILE``, store blobs, ``index.json`` and ``oci-layout``.
  Durable (the file flushed before the rename, :func:`sync_directory` after it): always for
  :func:`atomic_write`, with ``fsync`` for :func:`atomic_file`.
* :class:`KernelCopy` copies byte ranges between descriptors without passing them through
  Python: ``copy_file_range``, else ``sendfile``, else ``pread`` + write — remembering per
  destination which one works.
* :func:`open_regular` and :func:`read_regular` are how every file of a store is opened:
  without blocking (a FIFO put where a blob should be cannot hang the open), refusing
  anything that is not a regular file (a FIFO, ``/dev/urandom`` behind a symlink, a socket, a
  directory) and never reading past the size ``fstat`` reported, so no store entry can make a
  read block or go on forever.

Blocking functions here are meant for worker threads (``anyio.to_thread``); none of them
touches the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
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


class NotRegularFile(OSError):
    """A path that should be a regular file is a FIFO, a device, a socket or a directory."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", os.fspath(path))
        self.kind = kind


class FileTooLarge(OSError):
    """A file is larger than the most its reader accepts."""

    def __init__(self, path: str | os.PathLike[str], size: int, limit: int) -> None:
        super().__init__(
            errno.EFBIG, f"too large ({size} bytes; the limit is {limit})", os.fspath(path)
        )
        self.size = size
        self.limit = limit


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Blocking: open the regular file ``path`` for reading; return ``(fd, size)``.

    Opened with ``O_NONBLOCK``, so that opening a FIFO returns at once instead of waiting for a
    writer, then checked with ``fstat``: anything but a regular file raises
    :class:`NotRegularFile` (the descriptor closed).  ``O_NONBLOCK`` changes nothing for
    regular files.  The caller owns the descriptor and should read at most ``size`` bytes.
    Raises :class:`OSError` (``FileNotFoundError``, ``PermissionError``, ...).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO's missing peer): say what it is
            raise NotRegularFile(path, _kind(os.stat(path).st_mode)) from None
        raise
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegularFile(path, _kind(info.st_mode))
    return fd, info.st_size


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """Blocking: the bytes of the regular file ``path``, refusing one larger than ``limit``.

    The size is judged from ``fstat`` before anything is read (:class:`FileTooLarge`), and no
    more than that many bytes are read, so a file that grows meanwhile cannot make this read
    more.  Raises :class:`OSError` as :func:`open_regular` does.
    """
    fd, size = open_regular(path)
    try:
        if size > limit:
            raise FileTooLarge(path, size, limit)
        parts: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, CHUNK_SIZE))
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


class RegularFileReader:
    """A blocking, file-like reader of ``size`` bytes from ``offset`` of a regular file (to
    its end when ``size`` is ``None``), for :meth:`hatchway.decode.LayerDecoder.feed_file`.

    Opened with :func:`open_regular`, and never reads past the end the file had when opened,
    so a file that grows meanwhile cannot make it read more.  ``size`` is how many bytes it
    will deliver at most.  Owns its descriptor.
    """

    def __init__(
        self, path: str | os.PathLike[str], offset: int = 0, size: int | None = None
    ) -> None:
        self.fd, file_size = open_regular(path)
        self.name = os.fspath(path)
        available = max(0, file_size - offset)
        self.size = available if size is None else min(size, available)
        self._position = offset
        self._remaining = self.size

    def read(self, n: int) -> bytes:
        if self._remaining <= 0 or n <= 0:
            return b""
        data = os.pread(self.fd, min(n, self._remaining), self._position)
        self._position += len(data)
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


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
        """Give the file its mode, flush it if asked, and rename it over the target (then,
        if asked, flush the directory too: only then has the rename itself reached the disk,
        and the file is there after a power loss)."""
        assert self._fd is not None
        assert self._temp is not None
        fd, self._fd = self._fd, None
        await anyio.to_thread.run_sync(_finish, fd, self.path, self._fsync, self._mode)
        await anyio.to_thread.run_sync(_rename, self._temp, self.path)
        self._temp = None
        if self._fsync:
            try:
                await anyio.to_thread.run_sync(sync_directory, self.path.parent)
            except OSError as exc:
                raise OutputError(f"cannot flush {self.path.parent}: {exc.strerror}") from None

    async def discard(self) -> None:
        """Remove the temp file (idempotent; never raises; runs shielded)."""
        fd, temp, self._fd, self._temp = self._fd, self._temp, None, None
        if temp is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, fd, temp)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, sync_parent: bool = True) -> None:
    """Blocking: replace ``path`` with ``data`` atomically and durably: the file is flushed
    to disk before the rename, and its directory after it (unless ``sync_parent`` is false:
    the caller flushes the directory itself, once for many files, with
    :func:`sync_directory`)."""
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
    if sync_parent:
        sync_directory(path.parent)


def sync_directory(path: str | os.PathLike[str]) -> None:
    """Blocking: flush the directory ``path`` to disk, so that the renames and new names in
    it survive a power loss (``fsync`` of a file flushes its bytes, not its name).  Raises
    :class:`OSError`."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    old = _hold_replaced(path)
    try:
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if old is not None:  # the replaced file's blocks are freed when this closes
            threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()


def _hold_replaced(path: Path) -> int | None:
    """A descriptor of the regular file ``path`` that a rename is about to replace, if it is
    its only name: held across the rename, its blocks are freed when it is closed (in the
    background), not by the rename — overwriting a gigabyte archive would otherwise wait for
    the kernel to free a gigabyte."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none, a symlink (its target stays), unreadable: nothing to hold
        return None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return fd
    os.close(fd)  # a FIFO or a device was opened without blocking, and is left alone
    return None


def _discard(fd: int | None, temp: str) -> None:
    """Remove the temp file's name at once; give its blocks back in the background.

    Freeing the blocks of a large file (a gigabyte of archive) takes tens of milliseconds, and
    happens when its last descriptor closes: unlinking first and closing on a short-lived
    thread lets a cancelled operation return promptly with nothing left under any name."""
    if fd is None:  # already closed: hold the file open, so unlinking it is instant
        with contextlib.suppress(OSError):
            fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    if fd is not None:
        threading.Thread(target=_close_quietly, args=(fd,), daemon=True).start()


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


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
