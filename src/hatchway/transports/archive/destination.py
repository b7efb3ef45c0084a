"""An archive as a copy's destination: what ``save`` writes.

Layers arrive uncompressed and verified into a private staging area; once every layer is
there, the chosen layout plans the archive (pure, ``hatchway.formats``) and the output writes
it.  Why stage everything before writing: the promise *nothing is written on error* — a
registry can fail on the last layer of the last image, and stdout cannot take back a
gigabyte.  Only an output that discards everything on error (the temp file of ``-o FILE``)
adopts a source's local uncompressed files without copying them: it verifies them in the pass
that copies them into the archive.

Into such an output, when every layer's uncompressed size can be predicted (see
:mod:`.pipeline`), there is no staging at all: the archive is planned first and each layer is
decoded straight to its offset in the temp file while the others move.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from hatchway.errors import OutputError
from hatchway.files import AtomicTemp, TempFile, pwrite_all
from hatchway.formats import ArchiveFormat, ExportImage, Member, archive_size, plan_archive
from hatchway.limits import MEMORY_STAGING
from hatchway.model import Compression, Layer
from hatchway.progress import WriteAdvanced, WriteStarted
from hatchway.staging import make_staging_dir, remove_staging_dir
from hatchway.transports.archive.outputs import ArchiveOutput
from hatchway.transports.archive.pipeline import Placed, PlacedTarget, predict_sizes
from hatchway.transports.archive.staging import MemoryBudget, StagedLayer, StagingFile
from hatchway.transports.archive.writers import lay_out
from hatchway.transports.base import (
    BlobSource,
    CopyContext,
    CopyPlan,
    DestinationCapabilities,
    LayerForm,
    LocalBlob,
)


@dataclass(frozen=True, slots=True)
class ArchiveWritten:
    """What an archive destination wrote: the bytes that reached the output (compressed, if
    the output compresses) and the size of the (uncompressed) archive."""

    bytes_written: int
    archive_size: int


class ArchiveDestination:
    """Write one archive of ``archive_format`` into ``output``, staging under ``tmpdir``
    (default: the output's own choice, beside a file output)."""

    def __init__(
        self,
        output: ArchiveOutput,
        archive_format: ArchiveFormat = ArchiveFormat.DOCKER,
        *,
        tmpdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.output = output
        self.archive_format = archive_format
        self.tmpdir = tmpdir
        self.description = output.description
        # Local uncompressed files are adopted only by an output that discards everything on
        # error (it verifies them while copying them); layers go straight into the output when
        # it is a file that is not compressed.
        self.capabilities = DestinationCapabilities(
            LayerForm.UNCOMPRESSED,
            adopts_local_files=output.discards_on_error,
            batches_small_layers=True,
            writes_in_place=output.placement() is not None,
        )

    @asynccontextmanager
    async def receive(
        self, plan: CopyPlan, context: CopyContext
    ) -> AsyncIterator[_ArchiveReceiver | _PipelinedReceiver]:
        parent = self.tmpdir if self.tmpdir is not None else self.output.staging_parent
        directory = await make_staging_dir(parent)
        try:
            pipelined = await self._pipelined(plan, directory, context)
            if pipelined is None:
                yield _ArchiveReceiver(self, plan, directory, context)
                return
            try:
                yield pipelined
            finally:
                await pipelined.temp.discard()  # a no-op once it became the archive
        finally:
            await remove_staging_dir(directory)

    async def _pipelined(
        self, plan: CopyPlan, directory: Path, context: CopyContext
    ) -> _PipelinedReceiver | None:
        """A receiver writing layers in place, if the output allows it and every layer's
        size can be predicted."""
        temp = self.output.placement()
        if temp is None:
            return None
        local = plan.local_files
        layers = [
            (la, local.get(la.blob.digest), _size_hint(i.image.source, la))
            for i in plan.images
            for la in i.image.layers
        ]
        sizes = await anyio.to_thread.run_sync(predict_sizes, layers)
        if sizes is None:
            return None
        images = _export_images(plan)
        file = await temp.open()
        try:
            laid_out = await anyio.to_thread.run_sync(
                _lay_out_in_place, self.archive_format, images, sizes, file.fd, self.description
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await temp.discard()
            raise
        return _PipelinedReceiver(self, plan, directory, context, temp, file, laid_out)


def _size_hint(source: BlobSource, layer: Layer) -> int | None:
    return source.size_hint(layer.blob) if source.capabilities.size_hints else None


def _plan(
    archive_format: ArchiveFormat, images: list[ExportImage], sizes: dict[str, int]
) -> tuple[tuple[Member, ...], int]:
    members = plan_archive(archive_format, images, sizes)
    return members, archive_size(members)


class _ArchiveReceiver:
    def __init__(
        self,
        destination: ArchiveDestination,
        plan: CopyPlan,
        directory: Path,
        context: CopyContext,
    ) -> None:
        self._destination = destination
        self._plan = plan
        self._directory = directory
        self._context = context
        self._staged: dict[str, StagedLayer] = {}
        self._memory = MemoryBudget(MEMORY_STAGING)

    async def has_layer(self, layer: Layer) -> bool:
        return False

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        if layer.compression is not Compression.NONE:
            return False
        self._staged[layer.diff_id] = StagedLayer(
            layer.diff_id,
            layer.blob.size,
            local.path,
            pending_check=layer,
            store=source,
            offset=local.offset,
        )
        return True

    async def open_layer(self, layer: Layer) -> StagingFile:
        return StagingFile(self._directory, layer, self._record, self._memory)

    def _record(self, staged: StagedLayer) -> None:
        self._staged[staged.diff_id] = staged

    async def commit(self) -> ArchiveWritten:
        return await _write_staged(self._destination, self._plan, self._staged, self._context)


def _export_images(plan: CopyPlan) -> list[ExportImage]:
    return [ExportImage(i.image.config, i.image.layers, i.tags) for i in plan.images]


async def _write_staged(
    destination: ArchiveDestination,
    plan: CopyPlan,
    staged: dict[str, StagedLayer],
    context: CopyContext,
) -> ArchiveWritten:
    """Plan the archive with the staged layers' sizes and have the output write it."""
    sizes = {diff_id: layer.size for diff_id, layer in staged.items()}
    # Planning is pure but not free (thousands of members for a big bundle): a worker
    # thread keeps the event loop responsive meanwhile.
    members, total = await anyio.to_thread.run_sync(
        _plan, destination.archive_format, _export_images(plan), sizes
    )
    progress = context.progress
    progress(WriteStarted(total))
    written = 0

    def advance(n: int) -> None:
        nonlocal written
        written += n
        progress(WriteAdvanced(n))

    output_bytes = await destination.output.write(members, staged, advance, jobs=context.jobs)
    if written != total:  # pragma: no cover - a planning bug, not a runtime condition
        raise OutputError(f"wrote {written} bytes but planned {total}")
    return ArchiveWritten(output_bytes, total)


@dataclass(frozen=True, slots=True)
class _InPlace:
    """An archive planned with predicted sizes, its metadata already written: every layer
    body's offset, the metadata's size and the archive's total size."""

    sizes: dict[str, int]
    offsets: dict[str, int]
    metadata: int
    total: int


def _lay_out_in_place(
    archive_format: ArchiveFormat,
    images: list[ExportImage],
    sizes: dict[str, int],
    fd: int,
    description: str,
) -> _InPlace:
    """Blocking: plan the archive and write its metadata (headers, small files, padding) into
    ``fd`` at once, around the gaps its layers will fill, so that the metadata of a big save
    is never all held in memory.  Stops early, raising, when the calling task is cancelled."""
    members = plan_archive(archive_format, images, sizes)
    metadata = end = 0

    def write(offset: int, data: bytes) -> None:
        nonlocal metadata, end
        anyio.from_thread.check_cancelled()
        try:
            pwrite_all(fd, data, offset)
        except OSError as exc:
            raise OutputError(f"cannot write {description}: {exc.strerror}") from None
        metadata += len(data)
        end = offset + len(data)  # the end-of-archive blocks end the last run

    _, placed = lay_out(members, lambda diff_id: None, write)
    return _InPlace(sizes, {diff_id: offset for offset, diff_id in placed}, metadata, end)


class _PipelinedReceiver:
    """Layers decoded straight into the archive's temp file, at planned offsets."""

    def __init__(
        self,
        destination: ArchiveDestination,
        plan: CopyPlan,
        directory: Path,
        context: CopyContext,
        temp: AtomicTemp,
        file: TempFile,
        laid_out: _InPlace,
    ) -> None:
        self._destination = destination
        self._plan = plan
        self._directory = directory
        self._context = context
        self.temp = temp
        self._fd = file.fd
        self._path = file.path
        self._laid_out = laid_out
        self._done: dict[str, Placed | StagedLayer] = {}

    async def has_layer(self, layer: Layer) -> bool:
        return False

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        return False  # the engine moves it into place, verifying it on the way

    async def open_layer(self, layer: Layer) -> PlacedTarget:
        offset = self._laid_out.offsets[layer.diff_id]
        predicted = self._laid_out.sizes[layer.diff_id]
        return PlacedTarget(self._fd, offset, predicted, layer, self._directory, self._record)

    def _record(self, done: Placed | StagedLayer) -> None:
        self._done[done.diff_id] = done

    async def commit(self) -> ArchiveWritten:
        progress = self._context.progress
        sizes = self._laid_out.sizes
        exact = all(
            isinstance(d, Placed) and d.size == sizes[d.diff_id] for d in self._done.values()
        )
        if not exact:
            return await self._replan()
        total = self._laid_out.total
        progress(WriteStarted(total))
        progress(WriteAdvanced(self._laid_out.metadata))  # written when the plan was made
        progress(WriteAdvanced(sum(self._laid_out.sizes.values())))  # the layers, already in place
        await self.temp.finish()
        return ArchiveWritten(total, total)

    async def _replan(self) -> ArchiveWritten:
        """A prediction was wrong: write the archive again, with the real sizes, from where
        the layers' bytes are (this temp file, or spill files); then drop this temp file."""
        staged = {
            diff_id: d
            if isinstance(d, StagedLayer)
            else StagedLayer(diff_id, d.size, self._path, offset=d.offset)
            for diff_id, d in self._done.items()
        }
        written = await _write_staged(self._destination, self._plan, staged, self._context)
        await self.temp.discard()
        return written
