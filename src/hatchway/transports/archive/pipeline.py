"""Pipelined writing: layers decoded straight into the archive file, at their final offsets.

An archive's member offsets depend on every layer's *uncompressed* size, which a compressed
layer reveals only once it is decoded — so by default layers are staged first and copied into
the output afterwards (one more write and read of every layer).  Often the sizes can be known
before decoding:

* an uncompressed layer's size is its blob's;
* a gzip file ends with ISIZE, its uncompressed size modulo 2³² (RFC 1952) — read from the
  file, or, for a registry's blob, with a ranged request while the image resolves (the source's
  ``size_hint``);
* a zstd frame header usually carries its content size.

When every layer of a copy into ``-o FILE`` has a predicted size, the archive is planned up
front and each layer target writes at the layer's offset in the output's temp file, while the
other layers are still moving: no staging copy, no second pass, and peak extra disk near zero.
A prediction is only a prediction: the engine still verifies every byte, a target refuses to
write past its predicted size (it spills into the staging area instead), and if any layer's
real size differs, the archive is planned again with the real sizes and written into a fresh
temp file from where the bytes already are.  The bytes of the result never depend on whether
a prediction held.  The temp file is discarded on any failure, as always.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from hatchway.errors import OutputError
from hatchway.files import pwrite_all, write_all
from hatchway.limits import CHUNK_SIZE
from hatchway.model import Compression, Layer, hex_of
from hatchway.transports.archive.staging import StagedLayer
from hatchway.transports.base import LocalBlob

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def predict_sizes(
    layers: Iterable[tuple[Layer, LocalBlob | None, int | None]],
) -> dict[str, int] | None:
    """Every layer's uncompressed size by diffID, or ``None`` if one cannot be predicted.
    Each layer comes with its local file, if any, and its source's hint, if any (a remote
    gzip blob's trailer, read while the image resolved).

    Blocking (reads a few bytes of each compressed local blob): run it on a worker thread.
    """
    sizes: dict[str, int] = {}
    for layer, local, hint in layers:
        if layer.diff_id in sizes:
            continue
        size = predict_size(layer, local, hint)
        if size is None:
            return None
        sizes[layer.diff_id] = size
    return sizes


def predict_size(layer: Layer, local: LocalBlob | None, hint: int | None = None) -> int | None:
    """The uncompressed size ``layer`` will most likely have, or ``None`` (see the module)."""
    if layer.compression is Compression.NONE:
        return layer.blob.size
    if local is None and layer.compression is Compression.GZIP:
        return hint
    if local is None or layer.blob.size < 18:
        return None
    try:
        fd = os.open(local.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if layer.compression is Compression.GZIP:
            tail = os.pread(fd, 4, local.offset + layer.blob.size - 4)
            return struct.unpack("<I", tail)[0] if len(tail) == 4 else None
        head = os.pread(fd, 18, local.offset)
        return _zstd_content_size(head)
    except OSError:
        return None
    finally:
        os.close(fd)


def _zstd_content_size(head: bytes) -> int | None:
    if not head.startswith(_ZSTD_MAGIC):
        return None
    import zstandard  # only zstd layers need it

    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None
    return size if size >= 0 else None


@dataclass(frozen=True, slots=True)
class Placed:
    """A layer written at ``offset`` of the archive's temp file: ``size`` bytes (``key``: its
    name in the archive's plan)."""

    key: str
    offset: int
    size: int


class PlacedTarget:
    """Writes one layer at its planned offset of the archive's temp file (a
    :class:`~hatchway.transports.base.LayerTarget`).  Past the predicted size it spills: what
    it wrote moves into a staging file, and the rest follows there."""

    def __init__(
        self,
        fd: int,
        offset: int,
        predicted: int,
        key: str,
        staging: Path,
        on_commit: Callable[[Placed | StagedLayer], None],
    ) -> None:
        self._key = key
        self._fd = fd
        self._offset = offset
        self._predicted = predicted
        self._staging = staging
        self._spill: int | None = None
        self._written = 0
        self._on_commit = on_commit
        self.name = "the archive"

    def write(self, data: bytes | memoryview) -> int:
        try:
            if self._spill is None and self._written + len(data) <= self._predicted:
                pwrite_all(self._fd, data, self._offset + self._written)
            else:
                if self._spill is None:
                    self._start_spill()
                assert self._spill is not None
                write_all(self._spill, data)
        except OSError as exc:
            raise OutputError(f"cannot write {self.name}: {exc.strerror}") from None
        self._written += len(data)
        return len(data)

    @property
    def _spill_path(self) -> Path:
        return self._staging / (hex_of(self._key) + ".spill")

    def _start_spill(self) -> None:
        """The layer is larger than predicted: continue in a staging file."""
        self._spill = os.open(
            self._spill_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        done = 0
        while done < self._written:
            chunk = os.pread(self._fd, min(CHUNK_SIZE, self._written - done), self._offset + done)
            if not chunk:
                raise OSError(5, "archive temp file is shorter than what was written")
            write_all(self._spill, chunk)
            done += len(chunk)

    async def commit(self, size: int) -> None:
        if self._spill is None:
            # Exactly as predicted: in place.  Smaller: the bytes are in place too, but the
            # archive must be planned again (the caller sees the size differ).
            self._on_commit(Placed(self._key, self._offset, size))
            return
        await anyio.to_thread.run_sync(self._close)
        self._on_commit(StagedLayer(self._key, size, str(self._spill_path)))

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        if self._spill is not None:
            fd, self._spill = self._spill, None
            with contextlib.suppress(OSError):
                os.close(fd)
