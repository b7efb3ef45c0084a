"""Verify (and decompress) one layer blob: the CPU work of a copy, run on worker threads.

A :class:`LayerDecoder` is *pushed* the stored bytes of a blob (from a local file or as they
arrive from a network) and hashes them (the blob digest). It also decompresses gzip or zstd and
hashes the result (the diffID), whatever it writes out: decoding to the uncompressed form (what
an archive of uncompressed layers holds) it writes the uncompressed bytes; keeping the stored
form (what a store or a registry holds) it writes the stored bytes through unchanged and only
hashes what it inflated — so every layer that moves is checked against both digests. Being
push-based, a download is decoded while it arrives, and a local file is decoded in steps, so
the async side reports progress and honours cancellation between calls. Memory stays bounded:
input arrives in chunks and decompressed output is produced at most ``CHUNK_SIZE`` at a time,
so even a decompression bomb cannot balloon. gzip uses ISA-L (``isal``), about twice as fast as
zlib, and both release the GIL, as hashlib does, so two layers decode on two cores — and one
gzip layer can use two when a core is free (``feed_file(split=True)``: inflating on one thread,
hashing and writing the output on a helper).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import IO, Any, cast

import zstandard
from isal import isal_zlib

from hatchway.errors import DigestMismatch, OutputError, StoreError
from hatchway.limits import CHUNK_SIZE
from hatchway.model import Compression, Layer

_GZIP_ERROR = cast("type[Exception]", isal_zlib.error)
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31
#: Inflated chunks (up to ``CHUNK_SIZE`` each) waiting for the helper thread of a split step.
_SPLIT_QUEUE = 4


class _HashingWriter:
    """The sink zstd's stream writer decompresses into: hashes, counts, and writes through."""

    def __init__(self, decoder: LayerDecoder) -> None:
        self._decoder = decoder

    def write(self, data: bytes) -> int:
        self._decoder._emit(data)
        return len(data)


class LayerDecoder:
    """Verify the stored blob of ``layer`` and write it into ``dest`` (``None``: verify only).

    Both the blob digest and the diffID are checked.  With ``decompress`` (the default)
    ``dest`` receives the uncompressed layer; without, ``dest`` receives the stored bytes (and
    what is inflated is only hashed).  Call :meth:`feed` with consecutive chunks of the stored
    blob, then :meth:`finish`, which raises :class:`~hatchway.errors.DigestMismatch` or
    :class:`~hatchway.errors.StoreError` on any mismatch and returns the size of the form
    written (uncompressed, or stored).  ``store`` names the source in errors.
    """

    def __init__(
        self, layer: Layer, dest: IO[bytes] | None, *, store: str, decompress: bool = True
    ) -> None:
        self.layer = layer
        #: Bytes of the uncompressed layer seen so far.
        self.size = 0
        self.consumed = 0
        #: Where the uncompressed bytes go, and where the stored ones go (one is ``None``).
        self._dest = dest if decompress else None
        self._stored_dest = None if decompress else dest
        self._decompress = decompress
        self.store = store
        #: What the blob is called in errors.
        self.what = f"layer blob {layer.blob.digest}"
        self._blob_hash = hashlib.sha256()
        self._plain = layer.compression is Compression.NONE
        self._diff_hash = self._blob_hash if self._plain else hashlib.sha256()
        self._gzip: Any = None
        self._zstd: Any = None
        if not self._plain and layer.compression is Compression.GZIP:
            self._gzip = isal_zlib.decompressobj(_GZIP_WBITS)
            #: Where inflated chunks go: :meth:`_emit`, or a split step's hand-off queue.
            self._inflated: Callable[[bytes], None] = self._emit
        elif not self._plain and layer.compression is Compression.ZSTD:
            self._zstd = zstandard.ZstdDecompressor().stream_writer(
                cast(IO[bytes], _HashingWriter(self)), write_size=CHUNK_SIZE, write_return_read=True
            )

    def feed(self, chunk: bytes | memoryview) -> None:
        """Take the next chunk of the stored blob."""
        if not chunk:
            return
        self.consumed += len(chunk)
        if self.consumed > self.layer.blob.size:
            raise self._corrupt(
                f"blob is longer than its descriptor's {self.layer.blob.size} bytes"
            )
        if not self._plain:
            self._blob_hash.update(chunk)
        if self._stored_dest is not None:
            self._write(self._stored_dest, chunk)
        try:
            if self._gzip is not None:
                self._inflate(bytes(chunk))
            elif self._zstd is not None:
                self._zstd.write(chunk)
            else:
                self._emit(chunk)
        except _GZIP_ERROR as exc:
            raise self._corrupt(f"corrupt gzip data ({exc})") from None
        except zstandard.ZstdError as exc:
            raise self._corrupt(f"corrupt zstd data ({exc})") from None

    def feed_file(
        self,
        source: IO[bytes],
        budget: int,
        checkpoint: Callable[[], object] | None = None,
        *,
        split: bool = False,
    ) -> int:
        """Feed up to ``budget`` bytes read from ``source``; return how many (0 at its end).

        ``checkpoint`` runs before every ``CHUNK_SIZE`` read: the engine passes
        :func:`anyio.from_thread.check_cancelled`, so a cancelled operation stops within one
        chunk's work instead of at the end of the step.  ``split`` puts a gzip layer's
        uncompressed side (the diffID hash and the write) on a helper thread for the step, so
        that one big layer decodes on two cores (see :meth:`_feed_split`)."""
        if split and self._gzip is not None:
            return self._feed_split(source, budget, checkpoint)
        return self._feed_from(source, budget, checkpoint, [])

    def _feed_from(
        self,
        source: IO[bytes],
        budget: int,
        checkpoint: Callable[[], object] | None,
        failed: list[BaseException],
    ) -> int:
        """Read and feed ``source`` in ``CHUNK_SIZE`` reads until ``budget``, its end, or a
        failure appears in ``failed``."""
        fed = 0
        while fed < budget and not failed:
            if checkpoint is not None:
                checkpoint()
            chunk = source.read(min(CHUNK_SIZE, budget - fed))
            if not chunk:
                break
            self.feed(chunk)
            fed += len(chunk)
        return fed

    def _feed_split(
        self, source: IO[bytes], budget: int, checkpoint: Callable[[], object] | None
    ) -> int:
        """:meth:`feed_file` in two stages: this thread reads, hashes the stored bytes and
        inflates; a helper thread hashes and writes what comes out, in order, through a
        queue of a few chunks.  Both stages release the GIL in their C work, so the two
        overlap.  The helper lives for this call only: it is joined before returning or
        raising, and its error (a failed write) is raised here."""
        handoff: queue.Queue[bytes | None] = queue.Queue(maxsize=_SPLIT_QUEUE)
        failed: list[BaseException] = []

        def drain() -> None:
            while (data := handoff.get()) is not None:
                if not failed:
                    try:
                        self._emit(data)
                    except BaseException as exc:  # raised by the feeding thread
                        failed.append(exc)

        helper = threading.Thread(target=drain, name="hatchway-decode", daemon=True)
        helper.start()
        self._inflated = handoff.put
        try:
            fed = self._feed_from(source, budget, checkpoint, failed)
        finally:
            self._inflated = self._emit
            handoff.put(None)
            helper.join()
        if failed:
            raise failed[0]
        return fed

    def finish(self) -> int:
        """Check sizes and digests once every byte was fed; return the uncompressed size."""
        blob = self.layer.blob
        if self.consumed != blob.size:
            raise self._corrupt(
                f"blob ended after {self.consumed} of {blob.size} bytes (truncated)"
            )
        self._end_stream()
        actual = "sha256:" + self._blob_hash.hexdigest()
        if actual != blob.digest:
            raise DigestMismatch(f"{self.store}: layer blob {blob.digest}", blob.digest, actual)
        diff = "sha256:" + self._diff_hash.hexdigest()
        if diff != self.layer.diff_id:
            raise DigestMismatch(
                f"{self.store}: layer {blob.digest} (uncompressed content vs config diff_id)",
                self.layer.diff_id,
                diff,
            )
        return self.size if self._decompress else self.consumed

    def measured(self) -> tuple[str, str]:
        """For a blob whose digests are not known beforehand (an archive's compressed layer
        member): once every byte was fed, end the stream — checked for truncation and
        trailing garbage as :meth:`finish` checks it — and return the blob digest and the
        diffID found.  The layer given must have the blob's size."""
        self._end_stream()
        return "sha256:" + self._blob_hash.hexdigest(), "sha256:" + self._diff_hash.hexdigest()

    def _end_stream(self) -> None:
        """The compressed stream is over: what it still holds is emitted, and it must have
        ended properly (a gzip member cut short is an error)."""
        if self._gzip is not None:
            self._end_gzip()
        if self._zstd is not None:
            self._zstd.flush()

    def _emit(self, data: bytes | memoryview) -> None:
        """Take uncompressed bytes: hash them, write them if the uncompressed form is kept."""
        if not data:
            return
        self._diff_hash.update(data)  # the blob hash too, for an uncompressed layer
        if self._dest is not None:
            self._write(self._dest, data)
        self.size += len(data)

    def _write(self, dest: IO[bytes], data: bytes | memoryview) -> None:
        try:
            dest.write(data)
        except OSError as exc:  # ENOSPC, EIO: say where, not just what
            where = getattr(dest, "name", "the output")
            raise OutputError(f"cannot write {where}: {exc.strerror}") from None

    def _inflate(self, data: bytes) -> None:
        while True:
            if self._gzip.eof:
                if not data:
                    return
                data = self._next_member(data)
                if not data:
                    return
            out = self._gzip.decompress(data, CHUNK_SIZE)
            self._inflated(out)
            data = self._gzip.unconsumed_tail
            if self._gzip.eof and self._gzip.unused_data:
                data = self._gzip.unused_data + data
            if not data and len(out) < CHUNK_SIZE:
                return  # input consumed and no output left pending

    def _next_member(self, data: bytes) -> bytes:
        """After a gzip member ends: another member follows, or only zero padding may."""
        if data.startswith(_GZIP_MAGIC) or data == _GZIP_MAGIC[:1]:
            self._gzip = isal_zlib.decompressobj(_GZIP_WBITS)
            return data
        if data.strip(b"\0"):
            raise self._corrupt("trailing garbage after gzip data")
        return b""

    def _end_gzip(self) -> None:
        try:
            self._emit(self._gzip.flush())
        except _GZIP_ERROR as exc:
            raise self._corrupt(f"corrupt gzip data ({exc})") from None
        if not self._gzip.eof:
            raise self._corrupt("gzip data ends early (truncated blob)")

    def _corrupt(self, message: str) -> StoreError:
        return StoreError(self.store, f"{self.what}: {message}")
