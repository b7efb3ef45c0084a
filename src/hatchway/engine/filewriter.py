"""The positional writer: a planned archive written into a regular file, bodies in parallel.

The plan fixes every member's size, so every byte's offset in the archive is known before the
first one is written.  Into a regular file (the temp file of ``-o FILE``) the writer therefore
puts headers and small files down first, then copies the layer bodies *concurrently*, each
with ``pwrite``/``copy_file_range`` at its own offset — the result is byte-identical to a
front-to-back write, and two cores share the copying.  A layer whose verification was deferred
(``StagedLayer.pending_check``) is hashed in the same pass that copies it: one read of the
blob, not two; a mismatch fails the save and the temp file is discarded.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, cast

import anyio

from hatchway import tarstream
from hatchway.engine.decode import LayerDecoder
from hatchway.engine.staging import StagedLayer
from hatchway.errors import OutputError
from hatchway.formats import Member, member_header

#: Bytes copied per worker-thread step when moving a layer body.
COPY_STEP = 32 << 20
_RUN_LIMIT = 1 << 20
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}
)


class FileSink:
    """A regular file opened for writing, owned by the caller; written at explicit offsets."""

    def __init__(self, fd: int, description: str) -> None:
        self.fd = fd
        self.description = description
        self._kernel_copy = True

    async def write_at(self, offset: int, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._pwrite_all, offset, data)

    async def copy_at(self, offset: int, body: StagedLayer, advance: Callable[[int], None]) -> None:
        """Copy ``body`` to ``offset``, verifying it on the way if its check is pending."""
        src = await anyio.to_thread.run_sync(_open_read, body.path)
        try:
            if body.pending_check is not None:
                decoder = LayerDecoder(
                    body.pending_check,
                    cast(IO[bytes], _PositionalWriter(self, offset)),
                    store=body.store,
                )
                while n := await anyio.to_thread.run_sync(decoder.feed_file, src, COPY_STEP):
                    advance(n)
                await anyio.to_thread.run_sync(decoder.finish)
                return
            done = 0
            while done < body.size:
                n = await anyio.to_thread.run_sync(
                    self._copy_range,
                    src.fileno(),
                    done,
                    offset + done,
                    min(COPY_STEP, body.size - done),
                )
                if n == 0:
                    raise OutputError(f"staged layer {body.path} is shorter than {body.size} bytes")
                done += n
                advance(n)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(src.close)

    def _pwrite_all(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as exc:
                raise OutputError(f"cannot write {self.description}: {exc.strerror}") from None
            view, offset = view[n:], offset + n

    def _copy_range(self, src: int, src_offset: int, dst_offset: int, count: int) -> int:
        """Copy up to ``count`` bytes; returns how many (0 at the source's end)."""
        done = 0
        while done < count:
            if self._kernel_copy:
                try:
                    n = os.copy_file_range(
                        src, self.fd, count - done, src_offset + done, dst_offset + done
                    )
                except OSError as exc:
                    if exc.errno not in _NO_KERNEL_COPY:
                        raise OutputError(
                            f"cannot write {self.description}: {exc.strerror}"
                        ) from None
                    self._kernel_copy = False
                    continue
            else:
                data = os.pread(src, min(count - done, 1 << 20), src_offset + done)
                self._pwrite_all(dst_offset + done, data)
                n = len(data)
            if n == 0:
                break
            done += n
        return done


class _PositionalWriter:
    """A file-like ``write`` that appends at a moving offset of a :class:`FileSink`."""

    def __init__(self, sink: FileSink, offset: int) -> None:
        self._sink = sink
        self._offset = offset

    def write(self, data: bytes) -> int:
        self._sink._pwrite_all(self._offset, data)
        self._offset += len(data)
        return len(data)


async def write_positional(
    members: Sequence[Member],
    staged: Mapping[str, StagedLayer],
    sink: FileSink,
    advance: Callable[[int], None],
    *,
    jobs: int,
) -> None:
    """Write the archive: metadata runs in order, then layer bodies concurrently."""
    runs: list[tuple[int, bytes]] = []
    bodies: list[tuple[int, StagedLayer]] = []
    offset = 0
    run_start, run = 0, bytearray()

    def close_run() -> None:
        nonlocal run
        if run:
            runs.append((run_start, bytes(run)))
            run = bytearray()

    for member in members:
        header = member_header(member)
        if not run:
            run_start = offset
        run += header
        offset += len(header)
        if member.data is not None:
            run += member.data + tarstream.padding(member.size)
        elif member.layer is not None:
            close_run()
            bodies.append((offset, staged[member.layer]))
            run_start = offset + member.size
            run += tarstream.padding(member.size)
        offset += member.size + len(tarstream.padding(member.size))
        if len(run) >= _RUN_LIMIT:
            close_run()
    if not run:
        run_start = offset
    run += tarstream.END_OF_ARCHIVE
    close_run()
    for start, data in runs:
        await sink.write_at(start, data)
        advance(len(data))
    limiter = anyio.CapacityLimiter(jobs)

    async def copy(at: int, body: StagedLayer) -> None:
        async with limiter:
            await sink.copy_at(at, body, advance)

    async with anyio.create_task_group() as tg:
        for at, body in bodies:
            tg.start_soon(copy, at, body)


def _open_read(path: str) -> IO[bytes]:
    try:
        return open(path, "rb", buffering=0)
    except OSError as exc:
        raise OutputError(f"cannot read staged layer {path}: {exc.strerror}") from None
