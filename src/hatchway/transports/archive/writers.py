"""Serialising an archive plan: byte-identical every time, whichever way it is written.

The order and every header byte come from the plan (pure), so an archive is identical
whatever order its layers were staged in.  Two ways to write it, chosen by the output:

* :func:`write_positional` — into a regular file (the temp file of ``-o FILE``).  The plan
  fixes every member's offset, so headers and small files go down first and layer bodies are
  copied *concurrently*, each at its own offset — byte-identical to a front-to-back write, with
  two cores sharing the copying.  A layer with a pending check (a local file adopted unverified)
  is hashed in the same pass that copies it: one read, and a mismatch fails the copy, which
  discards the temp file.
* :func:`write_sequential` — front to back into a :class:`SequentialWriter` (a file
  descriptor such as stdout, or an anyio stream), which only ever receives verified layers.

Layer bodies move in the kernel where it can (:class:`~hatchway.files.KernelCopy`), in
``COPY_STEP`` steps on worker threads.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Protocol, cast

import anyio
from anyio.abc import ByteSendStream

from hatchway import tarstream
from hatchway.blocking import Abandonable
from hatchway.concurrency import collapse_errors
from hatchway.decode import LayerDecoder
from hatchway.errors import OutputError, StoreError
from hatchway.files import KernelCopy, RegularFileReader, open_regular, pwrite_all
from hatchway.formats import Member, member_header
from hatchway.limits import CHUNK_SIZE, COPY_STEP, RUN_LIMIT, WRITE_BUFFER
from hatchway.model import Layer
from hatchway.transports.archive.staging import StagedLayer

Advance = Callable[[int], None]


# -- positional: a regular file, bodies in parallel -------------------------------------


async def write_positional(
    members: Sequence[Member],
    bodies: Mapping[str, StagedLayer],
    fd: int,
    description: str,
    advance: Advance,
    *,
    jobs: int,
) -> None:
    """Write the archive into the regular file ``fd``: metadata runs in order, then layer
    bodies concurrently (at most ``jobs`` at once)."""
    out = _PositionalFile(fd, description)
    # Laying out thousands of headers is CPU work: a worker thread, not the event loop.
    runs, placed = await anyio.to_thread.run_sync(_lay_out, members, bodies)
    try:
        advance(await anyio.to_thread.run_sync(write_runs, fd, runs))
    except OSError as exc:
        raise OutputError(f"cannot write {description}: {exc.strerror}") from None
    limiter = anyio.CapacityLimiter(jobs)

    async def copy(at: int, body: StagedLayer) -> None:
        async with limiter:
            await out.copy_body(at, body, advance)

    with collapse_errors():
        async with anyio.create_task_group() as tg:
            for at, body in placed:
                tg.start_soon(copy, at, body)


def _lay_out(
    members: Sequence[Member], bodies: Mapping[str, StagedLayer]
) -> tuple[list[tuple[int, bytes]], list[tuple[int, StagedLayer]]]:
    """The archive as runs of metadata bytes at their offsets, and the offset of every body
    (bodies kept in memory go into the runs)."""
    runs, placed = lay_out(members, lambda diff_id: bodies[diff_id].data)
    return runs, [(offset, bodies[diff_id]) for offset, diff_id in placed]


def write_runs(fd: int, runs: Sequence[tuple[int, bytes]]) -> int:
    """Blocking: ``pwrite`` every run at its offset (one worker-thread call for all the
    metadata of an archive, however many members); returns the bytes written.  Stops early,
    raising, when the calling task is cancelled."""
    written = 0
    for offset, data in runs:
        anyio.from_thread.check_cancelled()
        pwrite_all(fd, data, offset)
        written += len(data)
    return written


def lay_out(
    members: Sequence[Member],
    inline: Callable[[str], bytes | None],
    emit: Callable[[int, bytes], None] | None = None,
) -> tuple[list[tuple[int, bytes]], list[tuple[int, str]]]:
    """The archive as runs of bytes at their offsets — headers, small files, padding, and the
    layer bodies ``inline`` returns bytes for — and the offset of every other layer body
    (by diffID).  The runs and bodies together cover the archive exactly; the last run ends
    with the end-of-archive blocks.  Pure, unless ``emit`` is given: each run is then handed
    to it as soon as it is complete instead of being returned (the runs of a thousand images
    are megabytes)."""
    runs: list[tuple[int, bytes]] = []
    keep = runs.append if emit is None else (lambda run: emit(*run))
    placed: list[tuple[int, str]] = []
    offset = 0
    run_start, run = 0, bytearray()

    def close_run() -> None:
        nonlocal run
        if run:
            keep((run_start, bytes(run)))
            run = bytearray()

    for member in members:
        header = member_header(member)
        if not run:
            run_start = offset
        run += header
        offset += len(header)
        data = member.data if member.layer is None else inline(member.layer)
        if data is not None:  # small files, and small layers kept in memory
            run += data + tarstream.padding(member.size)
        elif member.layer is not None:
            close_run()
            placed.append((offset, member.layer))
            run_start = offset + member.size
            run += tarstream.padding(member.size)
        offset += member.size + len(tarstream.padding(member.size))
        if len(run) >= RUN_LIMIT:
            close_run()
    if not run:
        run_start = offset
    run += tarstream.END_OF_ARCHIVE
    close_run()
    return runs, placed


class _PositionalFile:
    """A regular file written at explicit offsets (owned by the caller)."""

    def __init__(self, fd: int, description: str) -> None:
        self.fd = fd
        self.description = description
        self._kernel = KernelCopy(fd)

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        try:
            pwrite_all(self.fd, data, offset)
        except OSError as exc:
            raise OutputError(f"cannot write {self.description}: {exc.strerror}") from None

    async def copy_body(self, offset: int, body: StagedLayer, advance: Advance) -> None:
        """Copy ``body`` to ``offset``, verifying it on the way if its check is pending."""
        if body.pending_check is not None:
            await self._copy_checked(offset, body, body.pending_check, advance)
            return
        src = await anyio.to_thread.run_sync(_open_staged, body.path)
        try:
            done = 0
            while done < body.size:
                step = min(COPY_STEP, body.size - done)
                n = await anyio.to_thread.run_sync(
                    self._copy, src, body.offset + done, offset + done, step
                )
                if n == 0:
                    raise OutputError(f"{body.path} is shorter than its layer ({body.size} bytes)")
                done += n
                advance(n)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.close, src)

    async def _copy_checked(
        self, offset: int, body: StagedLayer, layer: Layer, advance: Advance
    ) -> None:
        """Copy a source's local file (adopted unverified) while verifying it: one read."""
        reader = await anyio.to_thread.run_sync(open_adopted, body)
        try:
            decoder = LayerDecoder(
                layer,
                cast(IO[bytes], _MovingOffset(self, offset)),
                store=body.store,
                decompress=not body.stored,
            )
            file = cast(IO[bytes], reader)
            while n := await anyio.to_thread.run_sync(
                decoder.feed_file,
                file,
                min(COPY_STEP, body.size - decoder.consumed),
                anyio.from_thread.check_cancelled,
            ):
                advance(n)
            await anyio.to_thread.run_sync(decoder.finish)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(reader.close)

    def _copy(self, src: int, src_offset: int, dst_offset: int, count: int) -> int:
        done = 0
        while done < count:
            try:
                n = self._kernel.copy(src, src_offset + done, count - done, dst_offset + done)
            except OSError as exc:
                raise OutputError(f"cannot write {self.description}: {exc.strerror}") from None
            if n == 0:
                break
            done += n
        return done


class _MovingOffset:
    """A file-like ``write`` that appends at a moving offset of a :class:`_PositionalFile`."""

    def __init__(self, out: _PositionalFile, offset: int) -> None:
        self._out = out
        self._offset = offset
        self.name = out.description

    def write(self, data: bytes | memoryview) -> int:
        self._out.write_at(self._offset, data)
        self._offset += len(data)
        return len(data)


# -- sequential: front to back ------------------------------------------------------------


class SequentialWriter(Protocol):
    """Where an archive goes front to back."""

    #: Whether the writer verifies a layer whose check is pending while it copies it (only
    #: writers into an output that any failure discards may).
    verifies_pending: bool

    async def write(self, data: bytes) -> None: ...

    async def write_file(self, body: StagedLayer, advance: Advance) -> None:
        """Append the ``body.size`` bytes of a staged layer."""
        ...

    async def finish(self) -> None:
        """The archive is complete: write out everything still buffered."""
        ...


async def write_sequential(
    members: Sequence[Member],
    bodies: Mapping[str, StagedLayer],
    out: SequentialWriter,
    advance: Advance,
) -> None:
    """Write the archive front to back; a layer whose check is pending goes only to a writer
    that verifies it on the way."""
    for member in members:
        header = member_header(member)
        await out.write(header)
        advance(len(header))
        if member.data is not None:
            await out.write(member.data + tarstream.padding(member.size))
            advance(member.size + len(tarstream.padding(member.size)))
        elif member.layer is not None:
            body = bodies[member.layer]
            if body.pending_check is not None and not out.verifies_pending:  # pragma: no cover
                # an engine invariant: only outputs that discard on error adopt files
                raise OutputError(f"{body.path}: unverified layer sent to a sequential output")
            if body.data is not None:
                await out.write(body.data)
                advance(len(body.data))
            else:
                await out.write_file(body, advance)
            pad = tarstream.padding(member.size)
            await out.write(pad)
            advance(len(pad))
    await out.write(tarstream.END_OF_ARCHIVE)
    advance(len(tarstream.END_OF_ARCHIVE))
    await out.finish()


class BufferedWriter:
    """The small writes of an archive written front to back (headers, small files, padding)
    gathered into blocks of ``WRITE_BUFFER`` bytes, each handed on by :meth:`_send`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= WRITE_BUFFER:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await self._send(data)

    async def finish(self) -> None:
        await self.flush()

    async def _send(self, data: bytes) -> None:
        raise NotImplementedError


class FdWriter(BufferedWriter):
    """Front to back into a file descriptor owned by the caller (not closed here).

    Every write runs abandonably (:class:`~hatchway.blocking.Abandonable`): a pipe, a FIFO
    or a socket whose reader stops reading blocks a write for as long as it pleases, and a
    stop signal must still take effect.  An abandoned write ends with the system call it was
    in; nothing is written after it, and the descriptor may be closed at once.
    """

    verifies_pending = False

    def __init__(self, fd: int, description: str) -> None:
        super().__init__()
        self._fd = fd
        self._description = description
        self._writes = Abandonable()

    async def _send(self, data: bytes) -> None:
        await self._writes.run(self._write_all, data)

    async def write_file(self, body: StagedLayer, advance: Advance) -> None:
        await self.flush()
        done = 0
        while done < body.size:
            step = min(COPY_STEP, body.size - done)
            n = await self._writes.run(self._copy, body.path, body.offset + done, step)
            if n == 0:
                raise OutputError(f"{body.path} is shorter than its layer ({body.size} bytes)")
            done += n
            advance(n)

    def _write_all(self, data: bytes) -> None:
        try:
            with self._writes.borrow(self._fd) as (fd,):
                self._writes.write_all(fd, data)
        except OSError as exc:
            raise self._error(exc) from None

    def _copy(self, path: str, offset: int, count: int) -> int:
        """One step of a staged layer: opened, copied and closed by the thread itself, so an
        abandoned step holds nothing the task could close under it."""
        src = _open_staged(path)
        try:
            with self._writes.borrow(self._fd) as (fd,):
                return self._writes.copy(KernelCopy(fd), src, offset, count)
        except OSError as exc:
            raise self._error(exc) from None
        finally:
            os.close(src)

    def _error(self, exc: OSError) -> OutputError:
        if exc.errno == errno.EPIPE:
            return OutputError(f"{self._description}: the reader closed the pipe")
        return OutputError(f"cannot write {self._description}: {exc.strerror}")


class StreamWriter(BufferedWriter):
    """Front to back into an anyio :class:`~anyio.abc.ByteSendStream` (not closed here)."""

    verifies_pending = False

    def __init__(self, stream: ByteSendStream) -> None:
        super().__init__()
        self._stream = stream

    async def _send(self, data: bytes) -> None:
        await self._stream.send(data)

    async def write_file(self, body: StagedLayer, advance: Advance) -> None:
        await self.flush()
        remaining = body.size
        async with await anyio.open_file(body.path, "rb") as file:
            await file.seek(body.offset)
            while remaining:
                chunk = await file.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise OutputError(f"{body.path} is shorter than its layer ({body.size} bytes)")
                await self._stream.send(chunk)
                remaining -= len(chunk)
                advance(len(chunk))


def open_adopted(body: StagedLayer) -> RegularFileReader:
    """Blocking: the source's local file of an adopted layer (``body.size`` bytes from
    ``body.offset``), opened without blocking and refused unless it is a regular file
    (:func:`hatchway.files.open_regular`); failures name the source, not the output."""
    try:
        return RegularFileReader(body.path, body.offset, body.size)
    except FileNotFoundError:
        raise StoreError(body.store, f"blob file {body.path} not found") from None
    except OSError as exc:
        raise StoreError(body.store, f"{body.path}: {exc.strerror or exc}") from None


def _open_staged(path: str) -> int:
    try:
        return open_regular(path)[0]
    except OSError as exc:
        raise OutputError(f"cannot read staged layer {path}: {exc.strerror or exc}") from None
