"""Verify and decompress one layer blob: the CPU work of staging, run in worker threads.

A :class:`LayerDecoder` reads a blob file, hashes the stored bytes (the blob digest),
decompresses gzip or zstd, hashes the result (the diffID) and optionally writes it out.  It
works in *steps* of a bounded number of input bytes so the async side can report progress and
honour cancellation between steps; memory stays bounded (chunks of ``CHUNK_SIZE``, and
decompression output capped per call, so even a decompression bomb cannot balloon).
"""

from __future__ import annotations

import hashlib
import io
import zlib
from typing import IO, Any, cast

import zstandard

from hatchway.errors import DigestMismatch, StoreError
from hatchway.model import Compression, Layer

CHUNK_SIZE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class _HashingReader(io.RawIOBase):
    """A file wrapper that hashes and counts every byte read through it (for zstd's reader)."""

    def __init__(self, file: IO[bytes], hasher: Any) -> None:
        self._file = file
        self._hasher = hasher
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._file.read(-1 if size is None else size)
        self._hasher.update(data)
        self.consumed += len(data)
        return data


class LayerDecoder:
    """Stream ``source`` (the stored blob of ``layer``) to ``dest``, uncompressed, verifying.

    ``verify_blob=False`` skips the stored-blob digest when the caller already verified it
    (a download verifies while it writes).  Call :meth:`step` until :attr:`done`, then
    :meth:`finish`, which raises on any mismatch.  ``what`` and ``store`` name the layer and
    the store in errors.
    """

    def __init__(
        self,
        source: IO[bytes],
        layer: Layer,
        dest: IO[bytes] | None,
        *,
        verify_blob: bool,
        store: str,
    ) -> None:
        self.layer = layer
        self.done = False
        self.size = 0
        self._dest = dest
        self._store = store
        self._verify_blob = verify_blob
        self._blob_hash = hashlib.sha256()
        self._plain = layer.compression is Compression.NONE
        self._diff_hash = self._blob_hash if self._plain else hashlib.sha256()
        self._reader = _HashingReader(source, self._blob_hash)
        self._gzip: Any = None
        self._zstd: Any = None
        if layer.compression is Compression.GZIP:
            self._gzip = zlib.decompressobj(wbits=31)
        elif layer.compression is Compression.ZSTD:
            self._zstd = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], self._reader), read_size=CHUNK_SIZE, read_across_frames=True
            )

    @property
    def consumed(self) -> int:
        """Stored bytes read so far."""
        return self._reader.consumed

    def step(self, budget: int) -> int:
        """Process at least ``budget`` stored bytes (or up to the end); return how many."""
        start = self._reader.consumed
        try:
            while not self.done and self._reader.consumed - start < budget:
                if self._zstd is not None:
                    out = self._zstd.read(CHUNK_SIZE)
                    if not out:
                        self.done = True
                    self._emit(out)
                    continue
                chunk = self._reader.read(CHUNK_SIZE)
                if not chunk:
                    self.done = True
                    if self._gzip is not None:
                        self._end_gzip()
                elif self._gzip is not None:
                    self._inflate(chunk)
                else:
                    self._emit(chunk)
        except zlib.error as exc:
            raise self._corrupt(f"corrupt gzip data ({exc})") from None
        except zstandard.ZstdError as exc:
            raise self._corrupt(f"corrupt zstd data ({exc})") from None
        return self._reader.consumed - start

    def finish(self) -> int:
        """Check sizes and digests; return the uncompressed size."""
        blob = self.layer.blob
        if self._verify_blob:
            if self.consumed != blob.size:
                raise self._corrupt(
                    f"blob is {self.consumed} bytes but its descriptor says {blob.size}"
                    + (" (truncated)" if self.consumed < blob.size else "")
                )
            actual = "sha256:" + self._blob_hash.hexdigest()
            if actual != blob.digest:
                raise DigestMismatch(
                    f"{self._store}: layer blob {blob.digest}", blob.digest, actual
                )
        diff = "sha256:" + self._diff_hash.hexdigest()
        if diff != self.layer.diff_id:
            raise DigestMismatch(
                f"{self._store}: layer {blob.digest} (uncompressed content vs config diff_id)",
                self.layer.diff_id,
                diff,
            )
        return self.size

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        if not self._plain:
            self._diff_hash.update(data)
        if self._dest is not None:
            self._dest.write(data)
        self.size += len(data)

    def _inflate(self, data: bytes) -> None:
        while data:
            if self._gzip.eof:
                data = self._next_member(data)
                if not data:
                    return
            self._emit(self._gzip.decompress(data, CHUNK_SIZE))
            data = self._gzip.unconsumed_tail
            if self._gzip.eof and self._gzip.unused_data:
                data = self._gzip.unused_data + data

    def _next_member(self, data: bytes) -> bytes:
        """After a gzip member ends: another member follows, or only zero padding may."""
        if data.startswith(_GZIP_MAGIC) or (len(data) == 1 and data == _GZIP_MAGIC[:1]):
            self._gzip = zlib.decompressobj(wbits=31)
            return data
        if data.strip(b"\0"):
            raise self._corrupt("trailing garbage after gzip data")
        return b""

    def _end_gzip(self) -> None:
        self._emit(self._gzip.flush())
        if not self._gzip.eof:
            raise self._corrupt("gzip data ends early (truncated blob)")

    def _corrupt(self, message: str) -> StoreError:
        return StoreError(self._store, f"layer blob {self.layer.blob.digest}: {message}")
