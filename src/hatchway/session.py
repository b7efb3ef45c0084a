"""A long-lived context for many operations at once: :class:`Session`.

An application that saves often — a bundle server, a CI cache, a mirroring controller — keeps
one session open and runs its operations through it, concurrently if it likes:

* one registry connection pool and token cache per registry host, shared by every operation;
* a remote layer that one operation is fetching is not fetched again by a concurrent one that
  needs it: the second waits for the first fetch and reads its verified copy
  (:mod:`hatchway.transports.blobcache`) — exactly once across operations, not only within one;
* progress can be a callback or an anyio memory object stream (:func:`progress_stream`), so a
  server can forward events to its clients.

What is *not* shared: names are resolved again by every operation (a tag may have moved), and
each operation has its own staging area, output and ``--jobs`` bound.  The module-level
functions (``hatchway.save`` ...) are one-shot sessions.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hatchway.engine.copy import copy
from hatchway.errors import HatchwayError
from hatchway.formats import ArchiveFormat
from hatchway.limits import DEFAULT_JOBS
from hatchway.model import Compression, Platform
from hatchway.progress import ProgressCallback, ProgressEvent, ignore_progress
from hatchway.reference import Transport, parse_query
from hatchway.results import PulledImage, PullResult, SavedImage, SaveResult
from hatchway.transports.archive.destination import ArchiveDestination
from hatchway.transports.archive.outputs import Output, output_for
from hatchway.transports.base import Source
from hatchway.transports.blobcache import BlobCache
from hatchway.transports.layout.destination import LayoutDestination
from hatchway.transports.layout.source import ImageSummary, OCILayoutStore
from hatchway.transports.registry.options import RegistryOptions
from hatchway.transports.router import Router

if TYPE_CHECKING:
    from hatchway.transports.registry.source import RegistryClients

#: What an operation reports progress to: a callback, or the send side of a memory object
#: stream (closed by the operation when it ends).
Progress = ProgressCallback | MemoryObjectSendStream[ProgressEvent]


def progress_stream() -> tuple[
    MemoryObjectSendStream[ProgressEvent], MemoryObjectReceiveStream[ProgressEvent]
]:
    """A stream pair for progress events: pass the send side as ``progress=``, iterate the
    receive side (``async for event in events``); the iteration ends when the operation ends.
    The buffer is unbounded, so a slow reader never slows the operation down."""
    return anyio.create_memory_object_stream[ProgressEvent](math.inf)


class Session:
    """Operations sharing registry connections, tokens and in-flight blob fetches.

    ``store`` is the local store: a path (default :func:`default_store_path`) or a
    :class:`~hatchway.Source` (left open).  ``registry`` configures registry access;
    ``tmpdir`` is where shared fetches are cached while operations run.  Use as an async
    context manager (or call :meth:`aclose`); operations may run concurrently in any task.
    """

    def __init__(
        self,
        *,
        store: Source | str | os.PathLike[str] | None = None,
        registry: RegistryOptions | None = None,
        tmpdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._store = store
        self._registry_options = registry
        self._cache = BlobCache(tmpdir)
        self._clients: RegistryClients | None = None  # made on first registry use
        self._closed = False

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the registry connections and remove cached blobs.  Idempotent."""
        self._closed = True
        clients, self._clients = self._clients, None
        with anyio.CancelScope(shield=True):
            try:
                if clients is not None:
                    await clients.aclose()
            finally:
                await self._cache.aclose()

    # -- operations ------------------------------------------------------------------------

    async def save(
        self,
        names: Sequence[str],
        output: Output,
        *,
        format: ArchiveFormat | str = ArchiveFormat.DOCKER,
        platform: Platform | str | None = None,
        jobs: int = DEFAULT_JOBS,
        tmpdir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
        fsync: bool = False,
        compression: Compression | str | None = None,
        compression_level: int | None = None,
    ) -> SaveResult:
        """Save ``names`` into one archive; see :func:`hatchway.save`."""
        archive_format = ArchiveFormat(format) if isinstance(format, str) else format
        the_platform = parse_platform(platform)
        target = output_for(
            output,
            fsync=fsync,
            compression=parse_compression(compression),
            level=compression_level,
        )
        destination = ArchiveDestination(target, archive_format, tmpdir=tmpdir)
        queries = [parse_query(name) for name in names]
        async with self._operation(progress) as report, self._sources() as source:
            done = await copy(
                queries, source, destination, platform=the_platform, jobs=jobs, progress=report
            )
        images = tuple(
            SavedImage(i.id, tuple(ref.recorded_tag() for ref in i.tags)) for i in done.plan.images
        )
        written = done.result
        return SaveResult(images, done.layers, written.bytes_written, written.archive_size)

    async def pull(
        self,
        names: Sequence[str],
        *,
        store: str | os.PathLike[str] | None = None,
        platform: Platform | str | None = None,
        jobs: int = DEFAULT_JOBS,
        progress: Progress | None = None,
    ) -> PullResult:
        """Copy images from registries into the store at ``store`` (default: this session's
        store, which must then be a path); see :func:`hatchway.pull`."""
        the_platform = parse_platform(platform)
        destination = LayoutDestination(self._store_path(store))
        queries = [parse_query(name, default=Transport.DOCKER) for name in names]
        async with self._operation(progress) as report:
            source = Router({Transport.DOCKER: self._registry_source})
            try:
                done = await copy(
                    queries, source, destination, platform=the_platform, jobs=jobs, progress=report
                )
            finally:
                await source.aclose()
        pulled = tuple(PulledImage(s.name, s.digest, s.id) for s in done.result if s.name)
        return PullResult(pulled, done.blobs_fetched, done.bytes_fetched)

    async def list_images(self, *, platform: Platform | str | None = None) -> list[ImageSummary]:
        """Every entry of the store's ``index.json``; see :func:`hatchway.list_images`."""
        store = self._store if isinstance(self._store, OCILayoutStore) else None
        owned = store is None
        the_store = store or OCILayoutStore(self._store_path(None))
        try:
            return await the_store.list_images(parse_platform(platform))
        finally:
            if owned:
                await the_store.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _operation(self, progress: Progress | None) -> AsyncIterator[ProgressCallback]:
        if self._closed:
            raise HatchwayError("the session is closed")
        async with self._cache.operation():
            if isinstance(progress, MemoryObjectSendStream):
                with progress:
                    yield _sender(progress)
            else:
                yield progress or ignore_progress

    @asynccontextmanager
    async def _sources(self) -> AsyncIterator[Source]:
        """The local store (or the caller's source) plus the registries, routed by name."""
        if isinstance(self._store, Source):
            yield self._store
            return
        router = Router(
            {Transport.STORE: self._local_store, Transport.DOCKER: self._registry_source}
        )
        try:
            yield router
        finally:
            await router.aclose()

    def _local_store(self) -> Source:
        if isinstance(self._store, Source):
            return self._store
        return OCILayoutStore(self._store_path(None))

    def _store_path(self, store: str | os.PathLike[str] | None) -> Path:
        if store is not None:
            return Path(store)
        if isinstance(self._store, Source):
            raise HatchwayError("this session's store is a Source object, not a path: name one")
        return Path(self._store) if self._store is not None else default_store_path()

    def _registry_source(self) -> Source:
        # Imported here: httpx and the registry client cost start-up time no local save needs.
        from hatchway.transports.registry.source import RegistryClients, RegistryStore

        if self._clients is None:
            self._clients = RegistryClients(self._registry_options)
        return self._cache.wrap(RegistryStore(clients=self._clients))


def _sender(stream: MemoryObjectSendStream[ProgressEvent]) -> ProgressCallback:
    def send(event: ProgressEvent) -> None:
        # A full buffer or a reader that went away: progress is best effort.
        with contextlib.suppress(
            anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
        ):
            stream.send_nowait(event)

    return send


def default_store_path() -> Path:
    """``$HATCHWAY_STORE``, else ``$XDG_DATA_HOME/hatchway/store``
    (``~/.local/share/hatchway/store``)."""
    explicit = os.environ.get("HATCHWAY_STORE")
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(data_home) / "hatchway" / "store"


def parse_platform(platform: Platform | str | None) -> Platform | None:
    """``os/arch[/variant]`` as a :class:`~hatchway.Platform` (a bad one is a HatchwayError)."""
    if isinstance(platform, str):
        try:
            return Platform.parse(platform)
        except ValueError as exc:
            raise HatchwayError(str(exc)) from None
    return platform


def parse_compression(compression: Compression | str | None) -> Compression | None:
    """``gzip``, ``zstd`` or ``none`` as a :class:`~hatchway.Compression` (``None`` stays:
    the output decides, by a path's suffix)."""
    if isinstance(compression, str):
        try:
            return Compression(compression)
        except ValueError:
            raise HatchwayError(
                f"unknown compression {compression!r} (gzip, zstd or none)"
            ) from None
    return compression
