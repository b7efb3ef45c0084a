"""The ordered writer: serialise an archive plan into a sink, byte-identical every time.

The order and every header byte come from the plan (pure), so the archive is identical
whatever order the layers were staged in.  Three sinks:

* :class:`~hatchway.engine.filewriter.FileSink`, a regular file (the temp file of
  ``-o FILE``): bodies are copied concurrently at their planned offsets (see filewriter.py).
* :class:`FdSink`, any file descriptor written front to back (stdout, maybe a pipe): layer
  bodies move in the kernel (``copy_file_range``, else ``sendfile``, else ``pread``/``write``),
  in bounded steps on worker threads.
* :class:`StreamSink`, any anyio byte stream, fed layer files in chunks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import anyio
from anyio.abc import ByteSendStream

from hatchway import tarstream
from hatchway.engine.filewriter import FileSink, write_positional
from hatchway.engine.staging import StagedLayer
from hatchway.errors import OutputError
from hatchway.formats import Member, archive_size, member_header
from hatchway.progress import ProgressCallback, WriteAdvanced, WriteStarted

#: Bytes copied per worker-thread step when moving a layer body.
COPY_STEP = 64 << 20
_BUFFER_LIMIT = 1 << 20
_FALLBACK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}
)


class Sink(Protocol):
    """Where archive bytes go, front to back."""

    async def write(self, data: bytes) -> None: ...

    async def write_file(self, path: str, size: int, advance: Callable[[int], None]) -> None:
        """Append exactly ``size`` bytes read from the start of the file at ``path``."""
        ...

    async def flush(self) -> None: ...


async def write_archive(
    members: Sequence[Member],
    staged: Mapping[str, StagedLayer],
    sink: Sink | FileSink,
    progress: ProgressCallback,
    *,
    jobs: int = 4,
) -> int:
    """Write ``members``; layer bodies come from ``staged`` (by diffID).  Returns the size.

    A :class:`FileSink` gets bodies copied concurrently (at most ``jobs`` at once) at their
    planned offsets; any other sink gets the archive front to back, and is only ever given
    layers that are already verified.
    """
    total = archive_size(members)
    progress(WriteStarted(total))
    written = 0

    def advance(n: int) -> None:
        nonlocal written
        written += n
        progress(WriteAdvanced(n))

    if isinstance(sink, FileSink):
        await write_positional(members, staged, sink, advance, jobs=jobs)
    else:
        await _write_sequential(members, staged, sink, advance)
    if written != total:  # pragma: no cover - a planning bug, not a runtime condition
        raise OutputError(f"wrote {written} bytes but planned {total}")
    return written


async def _write_sequential(
    members: Sequence[Member],
    staged: Mapping[str, StagedLayer],
    sink: Sink,
    advance: Callable[[int], None],
) -> None:
    for member in members:
        header = member_header(member)
        await sink.write(header)
        advance(len(header))
        if member.data is not None:
            await sink.write(member.data + tarstream.padding(member.size))
            advance(member.size + len(tarstream.padding(member.size)))
        elif member.layer is not None:
            body = staged[member.layer]
            if body.pending_check is not None:  # pragma: no cover - an engine invariant
                raise OutputError(f"{body.path}: unverified layer sent to a sequential sink")
            await sink.write_file(body.path, member.size, advance)
            pad = tarstream.padding(member.size)
            await sink.write(pad)
            advance(len(pad))
    await sink.write(tarstream.END_OF_ARCHIVE)
    advance(len(tarstream.END_OF_ARCHIVE))
    await sink.flush()


class FdSink:
    """Write to a file descriptor owned by the caller (not closed here)."""

    def __init__(self, fd: int, description: str) -> None:
        self._fd = fd
        self._description = description
        self._buffer = bytearray()
        self._strategy = "copy_file_range"

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _BUFFER_LIMIT:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await anyio.to_thread.run_sync(self._write_all, data)

    async def write_file(self, path: str, size: int, advance: Callable[[int], None]) -> None:
        await self.flush()
        src = await anyio.to_thread.run_sync(_open_read, path)
        try:
            offset = 0
            while offset < size:
                n = await anyio.to_thread.run_sync(
                    self._copy_step, src, offset, min(COPY_STEP, size - offset)
                )
                if n == 0:
                    raise OutputError(f"staged layer {path} is shorter than {size} bytes")
                offset += n
                advance(n)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.close, src)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError as exc:
                raise self._error(exc) from None
            view = view[n:]

    def _copy_step(self, src: int, offset: int, count: int) -> int:
        """Copy up to ``count`` bytes at ``offset``; returns bytes copied (0 at end of file)."""
        done = 0
        while done < count:
            try:
                n = self._copy_once(src, offset + done, count - done)
            except OSError as exc:
                raise self._error(exc) from None
            if n == 0:
                break
            done += n
        return done

    def _copy_once(self, src: int, offset: int, count: int) -> int:
        if self._strategy == "copy_file_range":
            try:
                return os.copy_file_range(src, self._fd, count, offset)
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                self._strategy = "sendfile"
        if self._strategy == "sendfile":
            try:
                return os.sendfile(self._fd, src, offset, count)
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                self._strategy = "pread"
        data = os.pread(src, min(count, 1 << 20), offset)
        self._write_all(data)
        return len(data)

    def _error(self, exc: OSError) -> OutputError:
        if exc.errno == errno.EPIPE:
            return OutputError(f"{self._description}: the reader closed the pipe")
        return OutputError(f"cannot write {self._description}: {exc.strerror}")


class StreamSink:
    """Write to an anyio :class:`~anyio.abc.ByteSendStream` (not closed here)."""

    def __init__(self, stream: ByteSendStream, chunk_size: int = 1 << 20) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._buffer = bytearray()

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= self._chunk_size:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await self._stream.send(data)

    async def write_file(self, path: str, size: int, advance: Callable[[int], None]) -> None:
        await self.flush()
        remaining = size
        async with await anyio.open_file(path, "rb") as file:
            while remaining:
                chunk = await file.read(min(self._chunk_size, remaining))
                if not chunk:
                    raise OutputError(f"staged layer {path} is shorter than {size} bytes")
                await self._stream.send(chunk)
                remaining -= len(chunk)
                advance(len(chunk))


def _open_read(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise OutputError(f"cannot read staged layer {path}: {exc.strerror}") from None
