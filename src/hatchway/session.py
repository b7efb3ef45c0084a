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
import importlib
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hatchway.engine.copy import check_jobs, copy
from hatchway.engine.verify import verify_archive
from hatchway.errors import HatchwayError, InvalidArgument
from hatchway.formats import ArchiveFormat
from hatchway.limits import DEFAULT_JOBS
from hatchway.model import Compression, Platform
from hatchway.progress import ProgressCallback, ProgressEvent, ignore_progress
from hatchway.reference import ImageQuery, Transport, parse_query
from hatchway.results import (
    LoadedImage,
    LoadResult,
    PulledImage,
    PullResult,
    PushedImage,
    PushResult,
    SavedImage,
    SaveResult,
    VerifyReport,
)
from hatchway.transports.archive.destination import ArchiveDestination
from hatchway.transports.archive.outputs import Output, check_outside, output_for
from hatchway.transports.archive.source import ArchiveStore
from hatchway.transports.base import Selection, Source
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
    ``share_fetches=False`` turns the sharing of remote blobs off (each is then consumed as
    it arrives, with no cache copy written to disk): for a session whose operations never
    overlap, as the one-shot functions (:func:`hatchway.save` ...) use it.
    """

    def __init__(
        self,
        *,
        store: Source | str | os.PathLike[str] | None = None,
        registry: RegistryOptions | None = None,
        tmpdir: str | os.PathLike[str] | None = None,
        share_fetches: bool = True,
    ) -> None:
        self._store = store
        self._registry_options = registry
        self._share_fetches = share_fetches
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
        platform: PlatformSpec = None,
        referrers: bool = True,
        artifact_types: Sequence[str] = (),
        jobs: int = DEFAULT_JOBS,
        tmpdir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
        fsync: bool = False,
        compression: Compression | str | None = None,
        compression_level: int | None = None,
        uncompressed_layers: bool = False,
    ) -> SaveResult:
        """Save ``names`` into one archive; see :func:`hatchway.save`."""
        archive_format = parse_format(format)
        selection = parse_selection(platform, referrers, artifact_types)
        target = output_for(
            output,
            fsync=fsync,
            compression=parse_compression(compression),
            level=compression_level,
        )
        queries = [parse_query(name) for name in names]
        check_outside(target, self._read_directories(queries))
        destination = ArchiveDestination(
            target, archive_format, tmpdir=tmpdir, uncompressed_layers=uncompressed_layers
        )
        # Registry layers' sizes are worth peeking at only if the archive can be written in place.
        async with (
            self._operation(progress, queries) as report,
            self._sources(tmpdir, peek_sizes=destination.capabilities.writes_in_place) as source,
        ):
            done = await copy(
                queries, source, destination, selection=selection, jobs=jobs, progress=report
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
        platform: PlatformSpec = None,
        referrers: bool = True,
        artifact_types: Sequence[str] = (),
        jobs: int = DEFAULT_JOBS,
        progress: Progress | None = None,
    ) -> PullResult:
        """Copy images from registries into the store at ``store`` (default: this session's
        store, which must then be a path); see :func:`hatchway.pull`."""
        selection = parse_selection(platform, referrers, artifact_types)
        destination = LayoutDestination(self._store_path(store))
        queries = [parse_query(name, default=Transport.DOCKER) for name in names]
        async with self._operation(progress, queries) as report:
            archives = ArchiveStore()
            source = Router(
                {
                    Transport.DOCKER: self._registry_source,
                    Transport.DOCKER_ARCHIVE: archives,
                    Transport.OCI_ARCHIVE: archives,
                    Transport.OCI: archives,
                }
            )
            try:
                done = await copy(
                    queries, source, destination, selection=selection, jobs=jobs, progress=report
                )
            finally:
                await source.aclose()
        pulled = tuple(PulledImage(s.name, s.digest, s.id) for s in done.result if s.name)
        return PullResult(pulled, done.blobs_fetched, done.bytes_fetched)

    async def push(
        self,
        names: Sequence[str],
        to: str,
        *,
        platform: PlatformSpec = None,
        referrers: bool = True,
        artifact_types: Sequence[str] = (),
        jobs: int = DEFAULT_JOBS,
        compress_layers: str = "gzip",
        tmpdir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """Push ``names`` into the registry ``to``; see :func:`hatchway.push`."""
        from hatchway.encode import LayerCompression
        from hatchway.transports.registry.destination import RegistryDestination
        from hatchway.transports.registry.targets import parse_push_target

        target = parse_push_target(to)
        try:
            compression = LayerCompression(compress_layers)
        except ValueError:
            choices = ", ".join(c.value for c in LayerCompression)
            raise InvalidArgument(
                "compress_layers", f"compress_layers must be one of {choices}"
            ) from None
        selection = parse_selection(platform, referrers, artifact_types)
        queries = [parse_query(name) for name in names]
        options = self._registry_options or RegistryOptions()
        destination = RegistryDestination(target, options, compression=compression, tmpdir=tmpdir)
        async with self._operation(progress, queries) as report, self._sources(tmpdir) as source:
            done = await copy(
                queries, source, destination, selection=selection, jobs=jobs, progress=report
            )
        pushed = done.result
        return PushResult(
            tuple(PushedImage(m.name, m.digest, m.id, m.kept) for m in pushed.manifests),
            pushed.uploaded,
            pushed.bytes_uploaded,
            pushed.mounted,
            pushed.skipped,
            pushed.notes,
        )

    async def load(
        self,
        archives: Sequence[str | os.PathLike[str]],
        *,
        store: str | os.PathLike[str] | None = None,
        platform: PlatformSpec = None,
        referrers: bool = True,
        artifact_types: Sequence[str] = (),
        jobs: int = DEFAULT_JOBS,
        tmpdir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
    ) -> LoadResult:
        """Import archives into the store at ``store`` (default: this session's store, which
        must then be a path); see :func:`hatchway.load`."""
        selection = parse_selection(platform, referrers, artifact_types)
        destination = LayoutDestination(self._store_path(store))
        async with self._operation(progress) as report:
            archive_store = ArchiveStore(tmpdir)
            try:
                queries = [await archive_store.query_for(os.fspath(a)) for a in archives]
                done = await copy(
                    queries,
                    archive_store,
                    destination,
                    selection=selection,
                    jobs=jobs,
                    progress=report,
                )
            finally:
                await archive_store.aclose()
        loaded = tuple(LoadedImage(s.name, s.digest, s.id) for s in done.result)
        return LoadResult(loaded, done.blobs_fetched, done.bytes_fetched)

    async def verify(
        self,
        archive: str | os.PathLike[str],
        *,
        jobs: int = DEFAULT_JOBS,
        tmpdir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
    ) -> VerifyReport:
        """Check one archive; see :func:`hatchway.verify`."""
        check_jobs(jobs)
        async with self._operation(progress) as report:
            return await verify_archive(
                os.fspath(archive),
                jobs=jobs,
                tmpdir=None if tmpdir is None else os.fspath(tmpdir),
                platform=None,
                progress=report,
            )

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
    async def _operation(
        self, progress: Progress | None, queries: Sequence[ImageQuery] = ()
    ) -> AsyncIterator[ProgressCallback]:
        if self._closed:
            raise HatchwayError("the session is closed")
        if any(q.registry for q in queries):
            # The registry client (httpx, ssl) takes a while to import: not on the loop.
            await anyio.to_thread.run_sync(
                importlib.import_module, "hatchway.transports.registry.source"
            )
        async with self._cache.operation():
            if isinstance(progress, MemoryObjectSendStream):
                with progress:
                    yield _sender(progress)
            else:
                yield progress or ignore_progress

    @asynccontextmanager
    async def _sources(
        self, tmpdir: str | os.PathLike[str] | None, *, peek_sizes: bool = False
    ) -> AsyncIterator[Source]:
        """The local store (or the caller's source), the registries and the archives (those
        compressed unpacked under ``tmpdir``), routed by name."""
        if isinstance(self._store, Source):
            yield self._store
            return
        archives = ArchiveStore(tmpdir)
        router = Router(
            {
                Transport.STORE: self._local_store,
                Transport.DOCKER: partial(self._registry_source, peek_sizes),
                Transport.DOCKER_ARCHIVE: archives,
                Transport.OCI_ARCHIVE: archives,
                Transport.OCI: archives,
            }
        )
        try:
            yield router
        finally:
            await router.aclose()

    def _local_store(self) -> Source:
        if isinstance(self._store, Source):
            return self._store
        return OCILayoutStore(self._store_path(None))

    def _read_directories(self, queries: Sequence[ImageQuery]) -> list[Path]:
        """The directories ``queries`` read images from: the store, ``oci:`` layouts."""
        found = [Path(q.path) for q in queries if q.transport is Transport.OCI and q.path]
        if not isinstance(self._store, Source) and any(
            q.transport is Transport.STORE for q in queries
        ):
            found.append(self._store_path(None))
        return found

    def _store_path(self, store: str | os.PathLike[str] | None) -> Path:
        if store is not None:
            return Path(store)
        if isinstance(self._store, Source):
            raise HatchwayError("this session's store is a Source object, not a path: name one")
        return Path(self._store) if self._store is not None else default_store_path()

    def _registry_source(self, peek_sizes: bool = False) -> Source:
        # Imported here: httpx and the registry client cost start-up time no local save needs.
        from hatchway.transports.registry.source import RegistryClients, RegistryStore

        if self._clients is None:
            self._clients = RegistryClients(self._registry_options)
        source = RegistryStore(clients=self._clients, peek_sizes=peek_sizes)
        return self._cache.wrap(source) if self._share_fetches else source


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


#: What ``platform=`` takes: ``None`` (the host's), a platform (``"linux/arm64"`` or a
#: :class:`~hatchway.Platform`), several (``"linux/amd64,linux/arm64"`` or a sequence), or
#: ``"all"``.
PlatformSpec = Platform | str | Sequence[Platform | str] | None


def parse_selection(
    platform: PlatformSpec, referrers: bool = True, artifact_types: Sequence[str] = ()
) -> Selection:
    """What a copy takes (see :data:`PlatformSpec`), as a :class:`~hatchway.Selection`; a
    platform that does not parse is a :class:`~hatchway.HatchwayError`."""
    if isinstance(artifact_types, str):
        artifact_types = (artifact_types,)
    if platform is None or isinstance(platform, Platform):
        platforms: tuple[Platform, ...] = () if platform is None else (platform,)
        return Selection(platforms, referrers=referrers, artifact_types=tuple(artifact_types))
    items = platform.split(",") if isinstance(platform, str) else list(platform)
    texts = [i.strip() for i in items if isinstance(i, str)]
    if "all" in texts:
        if len(items) > 1:
            raise HatchwayError("platform 'all' cannot be combined with other platforms")
        return Selection(
            all_platforms=True, referrers=referrers, artifact_types=tuple(artifact_types)
        )
    chosen = []
    for item in items:
        parsed = parse_platform(item.strip() if isinstance(item, str) else item)
        if parsed is None:
            raise HatchwayError("an empty platform in the list")
        if parsed not in chosen:
            chosen.append(parsed)
    return Selection(tuple(chosen), referrers=referrers, artifact_types=tuple(artifact_types))


def parse_platform(platform: Platform | str | None) -> Platform | None:
    """``os/arch[/variant]`` as a :class:`~hatchway.Platform` (a bad one is a HatchwayError)."""
    if isinstance(platform, str):
        try:
            return Platform.parse(platform)
        except ValueError as exc:
            raise InvalidArgument("platform", str(exc)) from None
    return platform


def parse_format(format: ArchiveFormat | str) -> ArchiveFormat:
    """``docker``, ``docker-1.10`` or ``docker-legacy`` as an :class:`~hatchway.ArchiveFormat`."""
    if isinstance(format, ArchiveFormat):
        return format
    try:
        return ArchiveFormat(format)
    except ValueError:
        names = ", ".join(f.value for f in ArchiveFormat)
        raise InvalidArgument("format", f"unknown archive format {format!r} ({names})") from None


def parse_compression(compression: Compression | str | None) -> Compression | None:
    """``gzip``, ``zstd`` or ``none`` as a :class:`~hatchway.Compression` (``None`` stays:
    the output decides, by a path's suffix)."""
    if isinstance(compression, str):
        try:
            return Compression(compression)
        except ValueError:
            raise InvalidArgument(
                "compression", f"unknown compression {compression!r} (gzip, zstd or none)"
            ) from None
    return compression
