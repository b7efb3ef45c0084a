"""Compressed archives (``-o bundle.tar.zst``): the whole tar through gzip or zstd.

What is promised, and how:

* **Every core.**  zstd compresses in libzstd's worker threads (``threads=-1``: one per CPU);
  gzip through python-isal's threaded writer (pigz's scheme: blocks compressed in parallel,
  each primed with the previous block's last 32 KiB).  The calling thread only hands blocks
  over, from an anyio worker thread, so the event loop stays free.
* **Deterministic.**  The same archive gives the same compressed bytes on every run, with any
  ``--jobs`` and any number of cores: input is re-cut into fixed ``BLOCK`` blocks before it
  reaches either compressor (the threaded gzip writer cuts blocks where ``write`` calls end),
  multi-threaded streaming zstd does not depend on its thread count, and neither format
  records a file name or a time (the gzip header's MTIME is 0).  The zstd frame records the
  archive's size and a checksum, as ``zstd`` writes them.
* **Bounded memory.**  Compressed bytes are spooled only until the caller drains them after
  each block; each compressor keeps a few blocks in flight.

Levels: zstd ``1``-``19`` (default 3, as the ``zstd`` tool); gzip is ISA-L's ``0``-``3``
(default 2; higher levels compress more and run slower, all much faster than zlib).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import PurePath
from typing import IO, Any, cast

import anyio
import zstandard
from anyio.abc import ByteSendStream
from anyio.streams.memory import MemoryObjectSendStream
from isal import igzip_threaded

from hatchway.blocking import Abandonable
from hatchway.concurrency import collapse_errors
from hatchway.decode import LayerDecoder
from hatchway.errors import InvalidArgument, OutputError
from hatchway.limits import CHUNK_SIZE
from hatchway.model import Compression
from hatchway.transports.archive.staging import StagedLayer
from hatchway.transports.archive.writers import Advance, BufferedWriter, open_adopted

#: Bytes handed to a compressor at once (also the threaded gzip writer's block size).
BLOCK = 1 << 20
#: A layer moves to the compressor in steps of this size, at most ``_PIPE_DEPTH`` steps read
#: ahead: reading and hashing one step overlaps compressing the one before, in bounded memory.
_PIPE_STEP = 4 << 20
_PIPE_DEPTH = 2

#: The levels each compression accepts and its default.
LEVELS: dict[Compression, tuple[int, int, int]] = {
    Compression.GZIP: (0, 3, 2),
    Compression.ZSTD: (1, 19, 3),
}

_SUFFIXES = {
    ".tar.gz": Compression.GZIP,
    ".tgz": Compression.GZIP,
    ".tar.zst": Compression.ZSTD,
    ".tar.zstd": Compression.ZSTD,
}


def compression_for_path(path: str | os.PathLike[str]) -> Compression:
    """What a file name asks for: ``.tar.gz``/``.tgz`` gzip, ``.tar.zst``/``.tar.zstd`` zstd,
    anything else none."""
    name = PurePath(path).name.lower()
    return next((c for suffix, c in _SUFFIXES.items() if name.endswith(suffix)), Compression.NONE)


def check_level(compression: Compression, level: int | None) -> int | None:
    """The level to use (``None`` for no compression); raises :class:`InvalidArgument` for a
    level the compression does not have, or a level without compression."""
    if compression is Compression.NONE:
        if level is not None:
            raise InvalidArgument(
                "compression_level",
                "a compression level needs a compressed output (.tar.gz, .tar.zst or --compress)",
            )
        return None
    low, high, default = LEVELS[compression]
    if level is None:
        return default
    if not low <= level <= high:
        raise InvalidArgument(
            "compression_level", f"{compression.value} levels are {low}-{high}, not {level}"
        )
    return level


class _Spool:
    """Where a compressor puts its output until the caller drains it (thread-safe: the
    threaded gzip writer writes from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        with self._lock:
            self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        with self._lock:
            parts, self._parts = self._parts, []
        return b"".join(parts)


class Compressor:
    """One compressed stream.  Blocking; call :meth:`feed`, :meth:`take` and :meth:`finish`
    from one thread at a time (any worker thread), and :meth:`close` always, at the end.

    ``size`` (the uncompressed total, when known) is recorded in the zstd frame header.
    Create it on a thread that outlives the stream (the event loop's): the threaded gzip
    writer stops its workers once its creating thread has exited.
    """

    def __init__(self, compression: Compression, level: int, size: int | None = None) -> None:
        if compression is Compression.NONE:
            raise ValueError("no compression")
        self.compression = compression
        self.consumed = 0
        self._spool = _Spool()
        self._pending = bytearray()
        self._closed = False
        #: Held by each call into the writer: an abandoned step may still be in one.
        self._lock = threading.Lock()
        self._writer: Any
        if compression is Compression.ZSTD:
            compressor = zstandard.ZstdCompressor(
                level=level, threads=-1, write_checksum=True, write_content_size=size is not None
            )
            self._writer = compressor.stream_writer(
                cast(IO[bytes], self._spool), size=-1 if size is None else size, closefd=False
            )
        else:
            self._writer = igzip_threaded.open(  # type: ignore[no-untyped-call]
                cast(Any, self._spool), "wb", compresslevel=level, threads=-1, block_size=BLOCK
            )

    def feed(self, data: bytes | memoryview) -> None:
        """Compress ``data`` (output becomes available to :meth:`take`)."""
        with self._lock:
            self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        self.consumed += len(data)
        view = memoryview(data)
        if self._pending:  # complete the block begun by an earlier call first
            take = min(BLOCK - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < BLOCK:
                return
            self._write(self._pending)
            self._pending = bytearray()
        whole = len(view) - len(view) % BLOCK
        for start in range(0, whole, BLOCK):  # whole blocks straight from the caller's bytes
            self._write(view[start : start + BLOCK])
        self._pending += view[whole:]

    def take(self) -> bytes:
        """The compressed bytes produced since the last call."""
        return self._spool.take()

    def finish(self) -> bytes:
        """End the stream; return the last compressed bytes (everything not yet taken)."""
        with self._lock:
            if self._pending:
                self._write(bytes(self._pending))
                self._pending.clear()
            self._close_writer()
        return self._spool.take()

    def close(self) -> None:
        """Stop the compressor's threads (idempotent; after an error too).  Never raises.

        A stream abandoned before :meth:`finish` (an error, a cancellation) is closed on a
        daemon thread: closing ends the stream, and a zstd writer first compresses whatever
        its workers hold — seconds at level 19 — for output nobody will read, while
        cancellation must take effect within milliseconds.  The output goes into this
        object's own buffer, never to a file, so nothing is written after the caller moved on.
        """
        if self._closed:
            return
        self._closed = True
        threading.Thread(
            target=_close_abandoned,
            args=(self._writer, self._lock),
            name="hatchway-compressor-close",
            daemon=True,
        ).start()

    def _write(self, block: bytes | bytearray | memoryview) -> None:
        try:
            self._writer.write(block)
        except zstandard.ZstdError as exc:
            raise OutputError(f"zstd compression failed: {exc}") from None

    def _close_writer(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()


def _close_abandoned(writer: Any, lock: threading.Lock) -> None:
    # After the step still running, if any; the stream is being abandoned: its error is not
    # the one to report.
    with lock, contextlib.suppress(Exception):
        writer.close()


class CompressedWriter(BufferedWriter):
    """A :class:`~hatchway.transports.archive.writers.SequentialWriter` that compresses into
    a file descriptor (``fd``) or an anyio stream (``stream``), neither closed here.

    Compression runs on worker threads, one step at a time.  With ``verifies_pending`` (the
    output is a temp file that any failure discards) a layer adopted unverified from a local
    file is hashed in the same pass that compresses it, and a mismatch fails the write.
    :meth:`aclose` must be called at the end, however the write ended.
    """

    def __init__(
        self,
        compressor: Compressor,
        description: str,
        *,
        fd: int | None = None,
        stream: ByteSendStream | None = None,
        verifies_pending: bool = False,
    ) -> None:
        if (fd is None) == (stream is None):
            raise ValueError("exactly one of fd and stream")
        super().__init__()
        self._compressor = compressor
        self._description = description
        self._fd = fd
        self._stream = stream
        self.verifies_pending = verifies_pending
        #: Compressed bytes written so far.
        self.written = 0
        #: Compression steps are abandoned on cancellation (one can take seconds at high
        #: levels, and a write into a pipe nobody reads blocks for ever); once the writer is
        #: closed, such a step writes nothing more to ``fd``.
        self._writes = Abandonable()

    async def write_file(self, body: StagedLayer, advance: Advance) -> None:
        """Read (and, when its check is pending, hash) the layer on one worker thread while
        another compresses what was read before: reading and hashing overlap compression."""
        if body.pending_check is not None and not self.verifies_pending:  # pragma: no cover
            raise OutputError(f"{body.path}: unverified layer sent to {self._description}")
        await self.flush()
        send, receive = anyio.create_memory_object_stream[list[bytes]](_PIPE_DEPTH)

        async def read() -> None:
            async with send:
                await self._read_layer(body, send)

        with collapse_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                async with receive:
                    async for chunks in receive:
                        compressed = await self._writes.run(self._compress_all, chunks)
                        await self._emit(compressed)
                        advance(sum(len(c) for c in chunks))

    async def _read_layer(
        self, body: StagedLayer, send: MemoryObjectSendStream[list[bytes]]
    ) -> None:
        file = await anyio.to_thread.run_sync(_open_layer_file, body)
        try:
            collected = _Collector()
            decoder = None
            if body.pending_check is not None:
                decoder = LayerDecoder(
                    body.pending_check,
                    cast(IO[bytes], collected),
                    store=body.store,
                    decompress=not body.stored,
                )
            done = 0
            while done < body.size:
                step = min(_PIPE_STEP, body.size - done)
                if decoder is not None:
                    n = await anyio.to_thread.run_sync(decoder.feed_file, file, step)
                else:
                    n = await anyio.to_thread.run_sync(collected.read_from, file, step)
                if n == 0:
                    break
                done += n
                await send.send(collected.take())
            if decoder is not None:
                await anyio.to_thread.run_sync(decoder.finish)
            elif done < body.size:
                raise OutputError(f"{body.path} is shorter than its layer ({body.size} bytes)")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close)

    async def finish(self) -> None:
        await self.flush()
        await self._emit(await self._writes.run(self._end))

    async def aclose(self) -> None:
        """Stop the compressor (shielded; never raises).  A step abandoned by cancellation
        finishes on its own, writing nothing more to ``fd``."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._abandon)

    def _abandon(self) -> None:
        self._writes.stop()
        self._compressor.close()

    # -- worker-thread halves --------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        compressed = await self._writes.run(self._compress, data)
        await self._emit(compressed)

    def _compress(self, data: bytes) -> bytes:
        self._compressor.feed(data)
        return self._drain()

    def _compress_all(self, chunks: list[bytes]) -> bytes:
        for chunk in chunks:
            self._compressor.feed(chunk)
        return self._drain()

    def _end(self) -> bytes:
        return self._send_fd(self._compressor.finish())

    def _drain(self) -> bytes:
        return self._send_fd(self._compressor.take())

    def _send_fd(self, data: bytes) -> bytes:
        """Write ``data`` to the descriptor (returning nothing left to send), or hand it back
        for the stream."""
        if self._fd is None or not data:
            return data
        self._write_fd(self._fd, data)
        return b""

    def _write_fd(self, fd: int, data: bytes) -> None:
        try:
            with self._writes.borrow(fd) as (own,):
                self._writes.write_all(own, data)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise OutputError(f"{self._description}: the reader closed the pipe") from None
            raise OutputError(f"cannot write {self._description}: {exc.strerror}") from None
        self.written += len(data)

    async def _emit(self, data: bytes) -> None:
        if data and self._stream is not None:
            await self._stream.send(data)
            self.written += len(data)


class _Collector:
    """Where a layer's bytes are gathered, one step at a time, on their way to the
    compressor (a file-like ``write`` for the layer decoder, or read straight from a file)."""

    name = "the compressor"

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def read_from(self, file: IO[bytes], count: int) -> int:
        done = 0
        while done < count:
            chunk = file.read(min(CHUNK_SIZE, count - done))
            if not chunk:
                break
            self._chunks.append(chunk)
            done += len(chunk)
        return done

    def take(self) -> list[bytes]:
        chunks, self._chunks = self._chunks, []
        return chunks


def _open_layer_file(body: StagedLayer) -> IO[bytes]:
    """The layer's file, positioned at its first byte (and read no further than its size by
    the callers).  A source's file adopted unverified is opened as every store file is: it
    cannot block, and must be a regular file (:func:`open_adopted`)."""
    if body.pending_check is not None:
        return cast(IO[bytes], open_adopted(body))
    try:
        file = open(body.path, "rb")  # noqa: SIM115 - closed by the caller, on a worker thread
    except OSError as exc:
        raise OutputError(f"cannot read {body.path}: {exc.strerror}") from None
    if body.offset:
        file.seek(body.offset)
    return file
