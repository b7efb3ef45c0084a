"""An archive as a copy's destination: what ``save`` writes.

Two layer forms (docs/formats.md):

* **as stored** — the default of the ``docker`` layout: the images exactly as their source
  holds them, the original index, manifest and config bytes and the stored (usually
  compressed) layer blobs, so every digest is kept.  The engine still checks every layer's
  blob digest and diffID on the way.  Every blob's size is known before anything moves.
* **uncompressed** — the ``docker-1.10`` and ``docker-legacy`` layouts, and ``docker`` when
  asked (``--uncompressed-layers``): layers decompressed, manifests written afresh.

Layers arrive verified into a private staging area; once every layer is there, the layout
plans the archive (pure, ``hatchway.formats``) and the output writes it.  Why stage before
writing: the promise *nothing is written on error* — a registry can fail on the last layer of
the last image, and stdout cannot take back a gigabyte.  Only an output that discards
everything on error (the temp file of ``-o FILE``) adopts a source's local files without
copying them: it verifies them in the pass that copies them into the archive.

Into such an output, when every layer's size in the archive is known in advance — always, as
stored; predicted from trailers and frame headers when uncompressed (:mod:`.pipeline`) —
there is no staging at all: the archive is planned first and each layer is written straight
to its offset in the temp file while the others move.
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
from hatchway.formats import (
    ArchiveFormat,
    ExportImage,
    Member,
    StoredArtifact,
    StoredExport,
    StoredImage,
    StoredName,
    archive_size,
    plan_archive,
    plan_stored,
)
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
    (default: the output's own choice, beside a file output).  ``uncompressed_layers``
    writes the ``docker`` layout with decompressed layers and new manifests instead of the
    images as stored (the other layouts always are)."""

    def __init__(
        self,
        output: ArchiveOutput,
        archive_format: ArchiveFormat = ArchiveFormat.DOCKER,
        *,
        tmpdir: str | os.PathLike[str] | None = None,
        uncompressed_layers: bool = False,
    ) -> None:
        self.output = output
        self.archive_format = archive_format
        self.tmpdir = tmpdir
        self.description = output.description
        self.stored = archive_format is ArchiveFormat.DOCKER and not uncompressed_layers
        # Local files are adopted only by an output that discards everything on error (it
        # verifies them while copying them); layers go straight into the output when it is a
        # file that is not compressed.
        self.capabilities = DestinationCapabilities(
            LayerForm.STORED if self.stored else LayerForm.UNCOMPRESSED,
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

    def key(self, layer: Layer) -> str:
        """What the archive's plan names ``layer`` by (its key in the layer form)."""
        return self.capabilities.layer_form.key(layer)

    def plan(self, plan: CopyPlan, sizes: dict[str, int]) -> tuple[Member, ...]:
        """The archive's members (pure; ``sizes`` by layer key: the bytes each layer has in
        the archive)."""
        if self.stored:
            return plan_stored(stored_export(plan))
        return plan_archive(self.archive_format, _export_images(plan), sizes)

    async def _pipelined(
        self, plan: CopyPlan, directory: Path, context: CopyContext
    ) -> _PipelinedReceiver | None:
        """A receiver writing layers in place, if the output allows it and every layer's
        size in the archive is known."""
        temp = self.output.placement()
        if temp is None:
            return None
        if self.stored:
            sizes: dict[str, int] | None = {la.blob.digest: la.blob.size for la, _ in plan.blobs()}
        else:
            local = plan.local_files
            layers = [(la, local.get(la.blob.digest), _size_hint(s, la)) for la, s in plan.blobs()]
            sizes = await anyio.to_thread.run_sync(predict_sizes, layers)
        if sizes is None:
            return None
        file = await temp.open()
        try:
            laid_out = await anyio.to_thread.run_sync(
                _lay_out_in_place, self, plan, sizes, file.fd, self.description
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await temp.discard()
            raise
        return _PipelinedReceiver(self, plan, directory, context, temp, file, laid_out)


def stored_export(plan: CopyPlan) -> StoredExport:
    """What a copy plan holds, as the pure planner of the as-stored layout takes it."""
    referrers = {a.digest for a in plan.referrers()}
    return StoredExport(
        tuple(
            StoredImage(
                i.image.descriptor,
                i.image.manifest_raw,
                i.image.config,
                tuple(la.blob for la in i.image.layers),
                i.tags,
            )
            for i in plan.images
        ),
        tuple((d.descriptor, d.raw) for d in plan.documents),
        tuple(
            StoredArtifact(
                a.document.descriptor,
                a.document.raw,
                a.blobs,
                entry=a.digest in referrers,
                subject=a.subject,
                tag=a.tag,
                artifact_type=a.artifact_type,
            )
            for a in plan.artifacts
        ),
        tuple(StoredName(n.reference, n.target) for n in plan.names),
    )


def _size_hint(source: BlobSource, layer: Layer) -> int | None:
    return source.size_hint(layer.blob) if source.capabilities.size_hints else None


def _plan(
    destination: ArchiveDestination, plan: CopyPlan, sizes: dict[str, int]
) -> tuple[tuple[Member, ...], int]:
    members = destination.plan(plan, sizes)
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
        stored = self._destination.stored
        if not stored and layer.compression is not Compression.NONE:
            return False
        key = self._destination.key(layer)
        self._staged[key] = StagedLayer(
            key,
            layer.blob.size,
            local.path,
            pending_check=layer,
            store=source,
            offset=local.offset,
            stored=stored,
        )
        return True

    async def open_layer(self, layer: Layer) -> StagingFile:
        key = self._destination.key(layer)
        return StagingFile(self._directory, layer, key, self._record, self._memory)

    def _record(self, staged: StagedLayer) -> None:
        self._staged[staged.key] = staged

    async def commit(self) -> ArchiveWritten:
        return await _write_staged(self._destination, self._plan, self._staged, self._context)


def _export_images(plan: CopyPlan) -> list[ExportImage]:
    """The images as the uncompressed layouts take them: one per image ID (two manifests of
    one config — gzip here, zstd there — are one image to Docker), with all their tags."""
    by_id: dict[str, ExportImage] = {}
    for i in plan.images:
        prior = by_id.get(i.id)
        tags = (prior.tags if prior else ()) + i.tags
        by_id[i.id] = ExportImage(i.image.config, i.image.layers, tags)
    return list(by_id.values())


async def _write_staged(
    destination: ArchiveDestination,
    plan: CopyPlan,
    staged: dict[str, StagedLayer],
    context: CopyContext,
) -> ArchiveWritten:
    """Plan the archive with the staged layers' sizes and have the output write it."""
    sizes = {key: layer.size for key, layer in staged.items()}
    # Planning is pure but not free (thousands of members for a big bundle): a worker
    # thread keeps the event loop responsive meanwhile.
    members, total = await anyio.to_thread.run_sync(_plan, destination, plan, sizes)
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
    """An archive planned with known sizes, its metadata already written: every layer body's
    offset, the metadata's size and the archive's total size."""

    sizes: dict[str, int]
    offsets: dict[str, int]
    metadata: int
    total: int


def _lay_out_in_place(
    destination: ArchiveDestination,
    plan: CopyPlan,
    sizes: dict[str, int],
    fd: int,
    description: str,
) -> _InPlace:
    """Blocking: plan the archive and write its metadata (headers, small files, padding) into
    ``fd`` at once, around the gaps its layers will fill, so that the metadata of a big save
    is never all held in memory.  Stops early, raising, when the calling task is cancelled."""
    members = destination.plan(plan, sizes)
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

    _, placed = lay_out(members, lambda key: None, write)
    return _InPlace(sizes, {key: offset for offset, key in placed}, metadata, end)


class _PipelinedReceiver:
    """Layers written straight into the archive's temp file, at planned offsets."""

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
        key = self._destination.key(layer)
        offset = self._laid_out.offsets[key]
        predicted = self._laid_out.sizes[key]
        return PlacedTarget(self._fd, offset, predicted, key, self._directory, self._record)

    def _record(self, done: Placed | StagedLayer) -> None:
        self._done[done.key] = done

    async def commit(self) -> ArchiveWritten:
        progress = self._context.progress
        sizes = self._laid_out.sizes
        exact = all(isinstance(d, Placed) and d.size == sizes[d.key] for d in self._done.values())
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
            key: d
            if isinstance(d, StagedLayer)
            else StagedLayer(key, d.size, self._path, offset=d.offset)
            for key, d in self._done.items()
        }
        written = await _write_staged(self._destination, self._plan, staged, self._context)
        await self.temp.discard()
        return written
