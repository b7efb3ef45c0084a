"""Where the engine writes a layer that a push must stage: a fetched layer (it is uploaded
from a local file, so a broken upload can be sent again), or one compressed on the way.

A :class:`StagedUpload` is a :class:`~hatchway.transports.base.LayerTarget`: the engine writes
the stored bytes from worker threads, through a :class:`~hatchway.encode.LayerEncoder` when the
layer is compressed on the way, into a file of the push's private staging directory; on
``commit`` — the engine has verified every byte — the file's digest and size are known and the
receiver (``on_commit``) pushes it wherever it is missing.  ``discard`` closes the file; the
staging directory is removed with everything in it when the push ends, however it ends.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, cast

import anyio

from hatchway.decode import LayerDecoder
from hatchway.encode import LayerEncoder, compressed_media_type
from hatchway.errors import DigestMismatch, OutputError, StoreError
from hatchway.files import RegularFileReader, write_all
from hatchway.model import Compression, Descriptor, Layer
from hatchway.transports.registry.upload import StagedBlob

#: Called with the layer, its staged blob and the descriptor it has in the registry.
OnCommit = Callable[[Layer, StagedBlob, Descriptor], Awaitable[None]]


class StagedUpload:
    """Where the engine writes one layer (a :class:`~hatchway.transports.base.LayerTarget`):
    a staging file, through the encoder when the layer is compressed on the way; committed,
    it is pushed wherever it is missing."""

    def __init__(
        self,
        layer: Layer,
        compression: Compression | None,
        on_commit: OnCommit,
        fd: int,
        path: Path,
    ) -> None:
        self._on_commit = on_commit
        self._layer = layer
        self._path = path
        self._fd: int | None = fd
        self._compression = compression
        self._encoder = LayerEncoder(compression or Compression.NONE, cast(IO[bytes], _Sink(self)))
        self.name = str(path)

    @classmethod
    async def create(
        cls, directory: Path, layer: Layer, compression: Compression | None, on_commit: OnCommit
    ) -> StagedUpload:
        """Open the staging file of ``layer`` in ``directory`` (compressed with
        ``compression``, or kept as stored when ``None``)."""
        path = directory / f"layer-{layer.blob.digest.removeprefix('sha256:')}"
        try:
            fd = await anyio.to_thread.run_sync(_create, path)
        except OSError as exc:
            raise OutputError(f"cannot write staging file {path}: {exc.strerror}") from None
        return cls(layer, compression, on_commit, fd, path)

    def write(self, data: bytes | memoryview) -> int:
        """What the engine hands over (from a worker thread): into the encoder."""
        return self._encoder.write(data)

    def sink(self, data: bytes | memoryview) -> None:
        """Where the encoder's output goes: the staging file."""
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise OutputError(f"cannot write staging file {self._path}: {exc.strerror}") from None

    async def commit(self, size: int) -> None:
        digest, length = await anyio.to_thread.run_sync(self._encoder.finish)
        await anyio.to_thread.run_sync(self._close)
        blob = self._layer.blob
        media_type = blob.media_type
        if self._compression is not None:
            media_type = compressed_media_type(media_type, self._compression) or media_type
        elif digest != blob.digest:  # pragma: no cover - the engine verified these bytes
            raise DigestMismatch(f"staging file {self._path}", blob.digest, digest)
        descriptor = Descriptor(media_type, digest, length, blob.annotations)
        staged = StagedBlob(str(self._path), digest, length)
        await self._on_commit(self._layer, staged, descriptor)

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class _Sink:
    """The encoder's output, into the staging file."""

    def __init__(self, staged: StagedUpload) -> None:
        self._staged = staged

    def write(self, data: bytes | memoryview) -> int:
        self._staged.sink(data)
        return len(data)


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def check_file(path: str, layer: Layer, source: str) -> None:
    """Blocking: the local file of ``layer`` (from the source named ``source``) is its blob —
    digest, size and diffID, as the engine checks a layer it moves — or raise.  Stops between
    chunks when the calling task is cancelled."""
    decoder = LayerDecoder(layer, None, store=source)
    try:
        reader = RegularFileReader(path)
    except OSError as exc:
        raise StoreError(source, f"{path}: {exc.strerror or exc}") from None
    try:
        # One byte more than the blob: a file longer than its descriptor is caught.
        decoder.feed_file(
            cast(IO[bytes], reader), layer.blob.size + 1, anyio.from_thread.check_cancelled
        )
    except OSError as exc:
        raise StoreError(source, f"{path}: {exc.strerror or exc}") from None
    finally:
        reader.close()
    decoder.finish()
