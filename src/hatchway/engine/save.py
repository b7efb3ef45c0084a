"""One save, end to end: names → images → staged layers → plan → bytes.

Phases, each finished before the next starts:

1. **parse** every name (an invalid one fails before the store is touched);
2. **resolve** names to images (concurrently; errors reported in name order);
3. **stage** every layer of every image in one task group: one task per image layer, keyed
   by diffID so shared layers are fetched once, at most ``jobs`` fetches at a time;
4. **plan** the archive (pure) from the images and the staged layers' sizes;
5. **write** the plan in order into the sink the caller opens only now — so on any failure
   before this point not one byte has been written anywhere.

The staging directory is removed when the save ends, however it ends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import anyio

from hatchway.concurrency import collapse_errors
from hatchway.engine.filewriter import FileSink
from hatchway.engine.resolve import assemble, resolve_all
from hatchway.engine.staging import Staging, make_staging_dir, remove_staging_dir
from hatchway.engine.writer import Sink, write_archive
from hatchway.errors import HatchwayError
from hatchway.formats import ArchiveFormat, ExportImage, plan_archive
from hatchway.model import Platform
from hatchway.progress import ProgressCallback, SaveFinished, SaveStarted
from hatchway.reference import parse_query
from hatchway.stores.base import Store

#: The default number of concurrent fetches.
DEFAULT_JOBS = 8


@dataclass(frozen=True, slots=True)
class SavedImage:
    """One image in a finished archive."""

    id: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save wrote."""

    images: tuple[SavedImage, ...]
    layers: int
    bytes_written: int


class SinkOpener(Protocol):
    """Opens the sink the archive is written to, once everything is staged.

    ``discards_on_error`` says that the sink keeps nothing when its context exits with an
    error (a temp file renamed only on success): then unverified bytes may be written to it
    while their verification runs, because a failed check throws them all away.  A stream or
    stdout cannot take bytes back, so it only ever receives verified bytes.
    """

    discards_on_error: bool

    def __call__(self) -> AbstractAsyncContextManager[Sink | FileSink]: ...


async def run_save(
    names: Sequence[str],
    store: Store,
    open_sink: SinkOpener,
    *,
    staging_parent: str | os.PathLike[str],
    archive_format: ArchiveFormat = ArchiveFormat.DOCKER,
    platform: Platform | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressCallback,
) -> SaveResult:
    """Save ``names`` from ``store``; ``open_sink`` is entered only once everything is staged."""
    if not names:
        raise HatchwayError("no image names given")
    if jobs < 1:
        raise HatchwayError(f"jobs must be at least 1, not {jobs}")
    queries = [parse_query(name) for name in names]
    resolved = await resolve_all(queries, store, platform, jobs=jobs)
    images = assemble(resolved)
    sources = {i.id: i.source for found in resolved for i in found}
    layers = {layer.diff_id: layer for image in images for layer in image.layers}
    progress(SaveStarted(len(images), len(layers), sum(la.blob.size for la in layers.values())))
    directory = await make_staging_dir(staging_parent)
    try:
        staging = Staging(
            directory, jobs=jobs, progress=progress, defer_in_place=open_sink.discards_on_error
        )
        with collapse_errors():
            async with anyio.create_task_group() as tg:
                for image in images:
                    for layer in image.layers:
                        tg.start_soon(staging.stage, layer, sources[image.config.id])
        staged = staging.staged()
        members = plan_archive(archive_format, images, {d: s.size for d, s in staged.items()})
        with collapse_errors():
            async with open_sink() as sink:
                written = await write_archive(members, staged, sink, progress, jobs=jobs)
    finally:
        await remove_staging_dir(directory)
    progress(SaveFinished(written))
    return SaveResult(_saved(images), len(layers), written)


def _saved(images: list[ExportImage]) -> tuple[SavedImage, ...]:
    return tuple(
        SavedImage(i.config.id, tuple(ref.recorded_tag() for ref in i.tags)) for i in images
    )
