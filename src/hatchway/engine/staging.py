"""The staging area: every layer fetched once, verified, and kept uncompressed on disk.

``Staging`` owns a private directory that exists only for one save.  :meth:`Staging.stage`
is keyed by diffID (:class:`~hatchway.engine.keyed.KeyedOnce`), so a layer shared by many
images is fetched exactly once however many tasks ask for it; callers that find it in flight
wait without holding a fetch slot.  A fetch holds one of ``jobs`` slots only while bytes move;
once a layer is staged its slot is free, long before the ordered writer reaches it (the
go-containerregistry deadlock, STYLE.md).

How a layer is staged depends on what its source offers:

* a local, uncompressed blob is not copied: the writer reads it from the store (blobs are
  content-addressed and immutable).  It is verified in place now, or — when the output is a
  temp file discarded on any error (``defer_in_place``) — by the writer in the same pass that
  copies it into the archive (``StagedLayer.pending_check``), so it is read only once;
* a local compressed blob is decompressed into ``<diffhex>`` while both digests are checked;
* a remote blob is decoded while it arrives, both digests checked at its end.

Files appear under their final name only after their digests check out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio

from hatchway.concurrency import KeyedOnce
from hatchway.engine.decode import CHUNK_SIZE, LayerDecoder
from hatchway.errors import OutputError, StoreError
from hatchway.model import Compression, Layer, hex_of
from hatchway.progress import LayerAdvanced, LayerStaged, LayerStarted, ProgressCallback
from hatchway.stores.base import BlobSource

#: Stored bytes processed per worker-thread step: large enough that thread hand-offs cost
#: nothing measurable, small enough that progress and cancellation stay responsive.
STEP_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class StagedLayer:
    """A layer whose uncompressed content is the file at ``path`` (``size`` bytes).

    ``pending_check`` is set when the file was not verified yet (a deferred in-place check):
    the positional writer verifies it while copying it, as ``store``'s content.
    """

    diff_id: str
    size: int
    path: str
    pending_check: Layer | None = None
    store: str = ""


class Staging:
    """Stage layers into ``directory`` with at most ``jobs`` fetches at once."""

    def __init__(
        self,
        directory: Path,
        *,
        jobs: int,
        progress: ProgressCallback,
        defer_in_place: bool = False,
    ) -> None:
        self.directory = directory
        self.progress = progress
        self._slots = anyio.CapacityLimiter(jobs)
        self._once: KeyedOnce[str, StagedLayer] = KeyedOnce()
        self._defer = defer_in_place

    async def stage(self, layer: Layer, source: BlobSource) -> StagedLayer:
        """The staged form of ``layer``, fetching it from ``source`` unless it is staged or
        in flight."""
        return await self._once.run(layer.diff_id, lambda: self._stage_new(layer, source))

    def staged(self) -> dict[str, StagedLayer]:
        return self._once.results()

    async def _stage_new(self, layer: Layer, source: BlobSource) -> StagedLayer:
        local = source.local_path(layer.blob)
        if local is not None and layer.compression is Compression.NONE and self._defer:
            self.progress(LayerStarted(layer.diff_id, layer.blob.size))
            self.progress(LayerStaged(layer.diff_id, layer.blob.size))
            return StagedLayer(
                layer.diff_id,
                layer.blob.size,
                local,
                pending_check=layer,
                store=source.description,
            )
        async with self._slots:
            self.progress(LayerStarted(layer.diff_id, layer.blob.size))
            if local is None:
                staged = await self._download_locked(layer, source)
            elif layer.compression is Compression.NONE:
                size = await _decode_file(self, layer, local, None, source.description)
                staged = StagedLayer(layer.diff_id, size, local)
            else:
                staged = await self._decode_local_locked(layer, local, source.description)
            self.progress(LayerStaged(layer.diff_id, staged.size))
            return staged

    async def _decode_local_locked(self, layer: Layer, path: str, store: str) -> StagedLayer:
        final = self.directory / hex_of(layer.diff_id)
        partial = final.with_name(final.name + ".partial")
        size = await _decode_file(self, layer, path, partial, store)
        await anyio.Path(partial).rename(final)
        return StagedLayer(layer.diff_id, size, str(final))

    async def _download_locked(self, layer: Layer, source: BlobSource) -> StagedLayer:
        """Fetch a remote blob, decoding and verifying it while it arrives."""
        final = self.directory / hex_of(layer.diff_id)
        partial = final.with_name(final.name + ".partial")
        out = await anyio.to_thread.run_sync(_open_write, partial)
        try:
            decoder = LayerDecoder(layer, out, store=source.description)
            pending: list[bytes] = []
            buffered = 0
            async with source.open_blob(layer.blob) as chunks:
                async for chunk in chunks:
                    pending.append(chunk)
                    buffered += len(chunk)
                    if buffered >= CHUNK_SIZE:
                        await anyio.to_thread.run_sync(decoder.feed, b"".join(pending))
                        self.progress(LayerAdvanced(layer.diff_id, buffered))
                        pending, buffered = [], 0
            if pending:
                await anyio.to_thread.run_sync(decoder.feed, b"".join(pending))
                self.progress(LayerAdvanced(layer.diff_id, buffered))
            size = await anyio.to_thread.run_sync(decoder.finish)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(out.close)
        await anyio.Path(partial).rename(final)
        return StagedLayer(layer.diff_id, size, str(final))


async def _decode_file(
    staging: Staging, layer: Layer, path: str, dest: Path | None, store: str
) -> int:
    """Decode the local blob file at ``path`` into ``dest`` (or just verify it), in steps."""
    src = await anyio.to_thread.run_sync(_open_read, path, store)
    out = None
    try:
        if dest is not None:
            out = await anyio.to_thread.run_sync(_open_write, dest)
        decoder = LayerDecoder(layer, out, store=store)
        while advanced := await anyio.to_thread.run_sync(decoder.feed_file, src, STEP_BYTES):
            staging.progress(LayerAdvanced(layer.diff_id, advanced))
        return await anyio.to_thread.run_sync(decoder.finish)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close_all, src, out)


def _open_read(path: str, store: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise StoreError(store, f"blob file {path} not found") from None
    except OSError as exc:
        raise StoreError(store, f"{path}: {exc.strerror}") from None


def _open_write(path: Path) -> IO[bytes]:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise OutputError(f"cannot write staging file {path}: {exc.strerror}") from None


def _close_all(first: IO[bytes], second: IO[bytes] | None) -> None:
    try:
        first.close()
    finally:
        if second is not None:
            second.close()


async def make_staging_dir(parent: str | os.PathLike[str]) -> Path:
    """Create a private staging directory under ``parent``."""
    try:
        path = await anyio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix=".hatchway-staging-", dir=parent)
        )
    except OSError as exc:
        raise OutputError(
            f"cannot create a staging directory in {parent}: {exc.strerror}"
        ) from None
    return Path(path)


async def remove_staging_dir(path: Path) -> None:
    """Remove a staging directory and everything in it, even while being cancelled."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
