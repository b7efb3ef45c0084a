"""The staging area: every layer fetched once, verified, and kept uncompressed on disk.

``Staging`` owns a private directory that exists only for one save.  :meth:`Staging.stage`
is keyed by diffID (:class:`~hatchway.engine.keyed.KeyedOnce`), so a layer shared by many
images is fetched exactly once however many tasks ask for it; callers that find it in flight
wait without holding a fetch slot.  A fetch holds one of ``jobs`` slots only while bytes move;
once a layer is staged its slot is free, long before the ordered writer reaches it (the
go-containerregistry deadlock, STYLE.md).

How a layer is staged depends on what the store offers:

* a local, uncompressed blob is verified in place and not copied (the writer reads it from the
  store; content-addressed blobs are immutable);
* a local compressed blob is decompressed into ``<diffhex>`` while both digests are checked;
* a remote blob is first downloaded to a temp file (digest checked as it arrives), then
  decompressed from there.

Files appear under their final name only after their digests check out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio

from hatchway.engine.decode import LayerDecoder
from hatchway.engine.keyed import KeyedOnce
from hatchway.errors import DigestMismatch, OutputError, StoreError
from hatchway.model import Compression, Layer, hex_of
from hatchway.progress import LayerAdvanced, LayerStaged, LayerStarted, ProgressCallback
from hatchway.stores.base import BlobSource

#: Stored bytes processed per worker-thread step: large enough that thread hand-offs cost
#: nothing measurable, small enough that progress and cancellation stay responsive.
STEP_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class StagedLayer:
    """A verified layer: its uncompressed content is the file at ``path``."""

    diff_id: str
    size: int
    path: str


class Staging:
    """Stage layers from ``store`` into ``directory`` with at most ``jobs`` fetches at once."""

    def __init__(self, directory: Path, *, jobs: int, progress: ProgressCallback) -> None:
        self.directory = directory
        self._slots = anyio.CapacityLimiter(jobs)
        self._once: KeyedOnce[str, StagedLayer] = KeyedOnce()
        self.progress = progress

    async def stage(self, layer: Layer, source: BlobSource) -> StagedLayer:
        """The staged form of ``layer``, fetching it from ``source`` unless it is staged or
        in flight."""
        return await self._once.run(layer.diff_id, lambda: self._stage_new(layer, source))

    def staged(self) -> dict[str, StagedLayer]:
        return self._once.results()

    async def _stage_new(self, layer: Layer, source: BlobSource) -> StagedLayer:
        async with self._slots:
            return await _Fetch(self, layer, source).stage_locked()


class _Fetch:
    """One layer being staged from one source (holding a fetch slot throughout)."""

    def __init__(self, staging: Staging, layer: Layer, source: BlobSource) -> None:
        self.directory = staging.directory
        self._progress = staging.progress
        self._layer = layer
        self._source = source

    async def stage_locked(self) -> StagedLayer:
        layer = self._layer
        self._progress(LayerStarted(layer.diff_id, layer.blob.size))
        local = self._source.local_path(layer.blob)
        final = self.directory / hex_of(layer.diff_id)
        if local is not None:
            in_place = layer.compression is Compression.NONE
            size = await self._decode_locked(
                layer, local, None if in_place else final, verify_blob=True, report=True
            )
            path = local if in_place else str(final)
        else:
            download = self.directory / (hex_of(layer.blob.digest) + ".blob")
            await self._download_locked(layer, download)
            if layer.compression is Compression.NONE:
                if layer.blob.digest != layer.diff_id:
                    raise DigestMismatch(
                        f"{self._source.description}: uncompressed layer {layer.blob.digest}",
                        layer.diff_id,
                        layer.blob.digest,
                    )
                await anyio.Path(download).rename(final)
                size = layer.blob.size
            else:
                size = await self._decode_locked(
                    layer, str(download), final, verify_blob=False, report=False
                )
                await anyio.Path(download).unlink()
            path = str(final)
        self._progress(LayerStaged(layer.diff_id, size))
        return StagedLayer(layer.diff_id, size, path)

    async def _decode_locked(
        self, layer: Layer, source: str, dest: Path | None, *, verify_blob: bool, report: bool
    ) -> int:
        partial = dest.with_name(dest.name + ".partial") if dest is not None else None
        src, out = await anyio.to_thread.run_sync(self._open_pair, source, partial)
        try:
            decoder = LayerDecoder(
                src, layer, out, verify_blob=verify_blob, store=self._source.description
            )
            while not decoder.done:
                advanced = await anyio.to_thread.run_sync(decoder.step, STEP_BYTES)
                if report and advanced:
                    self._progress(LayerAdvanced(layer.diff_id, advanced))
            size = decoder.finish()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close_all, src, out)
        if partial is not None and dest is not None:
            await anyio.Path(partial).rename(dest)
        return size

    def _open_pair(self, source: str, dest: Path | None) -> tuple[IO[bytes], IO[bytes] | None]:
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed by _close_all
        except FileNotFoundError:
            raise StoreError(self._source.description, f"blob {source} not found") from None
        except OSError as exc:
            raise StoreError(self._source.description, f"{source}: {exc.strerror}") from None
        if dest is None:
            return src, None
        try:
            return src, open(dest, "wb")
        except OSError as exc:
            src.close()
            raise OutputError(f"cannot write staging file {dest}: {exc.strerror}") from None

    async def _download_locked(self, layer: Layer, target: Path) -> None:
        """Fetch a remote blob to ``target``, checking its size and digest as it arrives."""
        hasher = hashlib.sha256()
        received = 0
        out = await anyio.to_thread.run_sync(_open_write, target)
        try:
            async with self._source.open_blob(layer.blob) as chunks:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > layer.blob.size:
                        raise StoreError(
                            self._source.description,
                            f"blob {layer.blob.digest} is longer than its descriptor's "
                            f"{layer.blob.size} bytes",
                        )
                    await anyio.to_thread.run_sync(_hash_and_write, hasher, out, chunk)
                    self._progress(LayerAdvanced(layer.diff_id, len(chunk)))
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close_all, out, None)
        if received != layer.blob.size:
            raise StoreError(
                self._source.description,
                f"blob {layer.blob.digest} ended after {received} of {layer.blob.size} bytes",
            )
        actual = "sha256:" + hasher.hexdigest()
        if actual != layer.blob.digest:
            raise DigestMismatch(
                f"{self._source.description}: layer blob {layer.blob.digest}",
                layer.blob.digest,
                actual,
            )


def _open_write(path: Path) -> IO[bytes]:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise OutputError(f"cannot write staging file {path}: {exc.strerror}") from None


def _hash_and_write(hasher: hashlib._Hash, out: IO[bytes], chunk: bytes) -> None:
    hasher.update(chunk)
    out.write(chunk)


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
