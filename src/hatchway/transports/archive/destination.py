"""An archive as a copy's destination: what ``save`` writes.

Layers arrive uncompressed and verified into a private staging area; once every layer is
there, the chosen layout plans the archive (pure, ``hatchway.formats``) and the output writes
it.  Why stage everything before writing: the promise *nothing is written on error* — a
registry can fail on the last layer of the last image, and stdout cannot take back a
gigabyte.  Only an output that discards everything on error (the temp file of ``-o FILE``)
adopts a source's local uncompressed files without copying them: it verifies them in the pass
that copies them into the archive.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from hatchway.errors import OutputError
from hatchway.formats import ArchiveFormat, ExportImage, Member, archive_size, plan_archive
from hatchway.model import Compression, Layer
from hatchway.progress import WriteAdvanced, WriteStarted
from hatchway.transports.archive.outputs import ArchiveOutput
from hatchway.transports.archive.staging import (
    StagedLayer,
    StagingFile,
    make_staging_dir,
    remove_staging_dir,
)
from hatchway.transports.base import CopyContext, CopyPlan, LayerForm, LocalBlob


@dataclass(frozen=True, slots=True)
class ArchiveWritten:
    """What an archive destination wrote: the bytes that reached the output (compressed, if
    the output compresses) and the size of the (uncompressed) archive."""

    bytes_written: int
    archive_size: int


class ArchiveDestination:
    """Write one archive of ``archive_format`` into ``output``, staging under ``tmpdir``
    (default: the output's own choice, beside a file output)."""

    layer_form = LayerForm.UNCOMPRESSED

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

    @asynccontextmanager
    async def receive(
        self, plan: CopyPlan, context: CopyContext
    ) -> AsyncIterator[_ArchiveReceiver]:
        parent = self.tmpdir if self.tmpdir is not None else self.output.staging_parent
        directory = await make_staging_dir(parent)
        try:
            yield _ArchiveReceiver(self, plan, directory, context)
        finally:
            await remove_staging_dir(directory)


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

    async def has_layer(self, layer: Layer) -> bool:
        return False

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        if layer.compression is not Compression.NONE:
            return False
        if not self._destination.output.discards_on_error:
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
        return await StagingFile(self._directory, layer, self._record).open()

    def _record(self, staged: StagedLayer) -> None:
        self._staged[staged.diff_id] = staged

    async def commit(self) -> ArchiveWritten:
        images = [ExportImage(i.image.config, i.image.layers, i.tags) for i in self._plan.images]
        sizes = {diff_id: staged.size for diff_id, staged in self._staged.items()}
        # Planning is pure but not free (thousands of members for a big bundle): a worker
        # thread keeps the event loop responsive meanwhile.
        members, total = await anyio.to_thread.run_sync(
            _plan, self._destination.archive_format, images, sizes
        )
        progress = self._context.progress
        progress(WriteStarted(total))
        written = 0

        def advance(n: int) -> None:
            nonlocal written
            written += n
            progress(WriteAdvanced(n))

        output_bytes = await self._destination.output.write(
            members, self._staged, advance, jobs=self._context.jobs
        )
        if written != total:  # pragma: no cover - a planning bug, not a runtime condition
            raise OutputError(f"wrote {written} bytes but planned {total}")
        return ArchiveWritten(output_bytes, total)
