"""The library entry points: :func:`save`, :func:`pull`, :func:`load`, :func:`verify`,
:func:`list_images`, :func:`open_store`.

Each operation is one copy through the one engine (``hatchway.engine.copy``): ``save`` copies
from the local store, registries and archives into an archive, ``pull`` from registries into
the local store, ``load`` from archives into the local store, ``verify`` from an archive
into a destination that keeps nothing.  All run under asyncio and trio
(anyio only).  Example (asyncio; trio is the same with ``trio.run``)::

    import asyncio, hatchway

    async def main() -> None:
        result = await hatchway.save(["app:1.0", "busybox"], "images.tar", store="./store")
        print(result.bytes_written)

    asyncio.run(main())
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from anyio.abc import ByteSendStream

from hatchway.engine.copy import copy
from hatchway.errors import HatchwayError
from hatchway.formats import ArchiveFormat
from hatchway.limits import DEFAULT_JOBS
from hatchway.model import Compression, Platform
from hatchway.progress import ProgressCallback, ignore_progress
from hatchway.reference import Transport, parse_query
from hatchway.transports.archive.destination import ArchiveDestination
from hatchway.transports.archive.outputs import output_for
from hatchway.transports.archive.source import ArchiveStore
from hatchway.transports.archive.verify import VerifyReport, verify_archive
from hatchway.transports.base import Source
from hatchway.transports.layout.destination import LayoutDestination
from hatchway.transports.layout.source import ImageSummary, OCILayoutStore
from hatchway.transports.registry.options import RegistryOptions
from hatchway.transports.router import Router

#: Where :func:`save` may write: a path (atomically), an anyio byte stream, or a file
#: descriptor the caller owns.
Output = str | os.PathLike[str] | ByteSendStream | int


@dataclass(frozen=True, slots=True)
class SavedImage:
    """One image in a finished archive: its ID and the tags recorded for it."""

    id: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save wrote: the images, the number of distinct layers, the bytes written to the
    output (compressed, when it was compressed) and the size of the tar archive itself."""

    images: tuple[SavedImage, ...]
    layers: int
    bytes_written: int
    archive_size: int = 0


@dataclass(frozen=True, slots=True)
class PulledImage:
    """One name a pull stored: as written into ``index.json`` (``host/repo:tag`` or
    ``host/repo@sha256:...``), the manifest digest and the image ID."""

    name: str
    digest: str
    id: str


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull did: the names stored, and how many layer blobs and bytes it downloaded
    (blobs the store already held intact are not downloaded again)."""

    images: tuple[PulledImage, ...]
    blobs_fetched: int
    bytes_fetched: int


async def save(
    names: Sequence[str],
    output: Output,
    *,
    store: Source | str | os.PathLike[str] | None = None,
    format: ArchiveFormat | str = ArchiveFormat.DOCKER,
    platform: Platform | str | None = None,
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    fsync: bool = False,
    registry: RegistryOptions | None = None,
    compression: Compression | str | None = None,
    compression_level: int | None = None,
) -> SaveResult:
    """Save the images ``names`` into one ``docker save``-compatible archive.

    ``output`` is a path (written atomically: complete or not at all), an anyio
    :class:`~anyio.abc.ByteSendStream`, or a file descriptor the caller owns (neither is
    closed here).  Nothing is written to ``output`` unless every image resolved and every
    layer was fetched and verified.  ``store`` is a :class:`~hatchway.Source` (left open) or
    the path of an OCI image layout (default: :func:`default_store_path`).  ``tmpdir`` holds
    the staging area (default: beside a path output, else the system temp directory).  Names
    written ``docker://HOST/REPO[:TAG|@DIGEST]`` are fetched from registries, configured by
    ``registry`` (credentials, insecure hosts, CA; see docs/registry.md).  ``jobs`` bounds how
    many layers move at once.  ``fsync=True`` flushes a path output to disk before it is
    renamed into place (durable across a crash; like ``docker save``, the default only
    guarantees that the file appears whole).

    ``compression`` (``"gzip"``, ``"zstd"``, ``"none"``) compresses the whole archive; ``None``
    means as a path's suffix says (``.tar.gz``, ``.tgz``, ``.tar.zst``, ``.tar.zstd``), and no
    compression for a descriptor or a stream.  ``compression_level``: zstd 1-19 (default 3),
    gzip 0-3 (ISA-L's levels, default 2).  The compressed bytes are deterministic too.

    Raises :class:`~hatchway.errors.HatchwayError` subclasses; see ``hatchway.errors``.
    """
    archive_format = ArchiveFormat(format) if isinstance(format, str) else format
    the_platform = _platform(platform)
    queries = [parse_query(name) for name in names]
    output_target = output_for(
        output,
        fsync=fsync,
        compression=_compression(compression),
        level=compression_level,
    )
    destination = ArchiveDestination(output_target, archive_format, tmpdir=tmpdir)
    async with _sources(store, registry, tmpdir) as source:
        report = await copy(
            queries,
            source,
            destination,
            platform=the_platform,
            jobs=jobs,
            progress=progress or ignore_progress,
        )
    images = tuple(
        SavedImage(i.id, tuple(ref.recorded_tag() for ref in i.tags)) for i in report.plan.images
    )
    return SaveResult(
        images, report.layers, report.result.bytes_written, report.result.archive_size
    )


async def pull(
    names: Sequence[str],
    *,
    store: str | os.PathLike[str] | None = None,
    registry: RegistryOptions | None = None,
    platform: Platform | str | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressCallback | None = None,
) -> PullResult:
    """Copy images from registries (``docker://`` optional) into the OCI layout ``store``
    (default :func:`default_store_path`, created if missing), so that a slow registry is read
    once and saved from often.

    What is stored per name: the platform manifest selected (for ``platform``, default the
    host's), its config and its layer blobs as the registry stores them, each verified before
    it is renamed into place; then one ``index.json`` entry per name (``host/repo:tag``, or
    ``host/repo@sha256:...`` for a digest), replacing an entry of the same name.  Blob writes
    are atomic and ``index.json`` is replaced atomically under a lock, so pulls may run side
    by side; a failed pull adds no entry.  Archive names (``docker-archive:PATH[:REF]``, ...)
    are accepted too and stored as :func:`load` stores them.  See docs/registry.md.
    """
    the_platform = _platform(platform)
    destination = LayoutDestination(Path(store) if store is not None else default_store_path())
    queries = [parse_query(name, default=Transport.DOCKER) for name in names]
    archives = ArchiveStore()
    source = Router(
        {
            Transport.DOCKER: lambda: _registry_source(registry),
            Transport.DOCKER_ARCHIVE: archives,
            Transport.OCI_ARCHIVE: archives,
            Transport.OCI: archives,
        }
    )
    try:
        report = await copy(
            queries,
            source,
            destination,
            platform=the_platform,
            jobs=jobs,
            progress=progress or ignore_progress,
        )
    finally:
        await source.aclose()
    pulled = tuple(PulledImage(s.name, s.digest, s.id) for s in report.result if s.name)
    return PullResult(pulled, report.blobs_fetched, report.bytes_fetched)


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One name a load stored: as written into ``index.json`` (``None`` for an image the
    archive records no name for, stored unnamed and reachable by its ID), the manifest digest
    and the image ID."""

    name: str | None
    digest: str
    id: str


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did: the names stored, and how many layer blobs and bytes it copied
    into the store (blobs the store already held intact are not copied again)."""

    images: tuple[LoadedImage, ...]
    blobs_stored: int
    bytes_stored: int


async def load(
    archives: Sequence[str | os.PathLike[str]],
    *,
    store: str | os.PathLike[str] | None = None,
    platform: Platform | str | None = None,
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> LoadResult:
    """Import every image of ``archives`` into the OCI layout ``store`` (default
    :func:`default_store_path`, created if missing), as ``docker load`` does.

    Each item is a path — a ``docker save`` archive of any era, an OCI archive (tar), plain,
    gzip or zstd, or an OCI layout directory; its kind is recognised by its content — or a
    transport name (``docker-archive:PATH[:REF]``, ``oci-archive:PATH[:REF]``,
    ``oci:DIR[:REF]``) to pick one image.  ``/dev/stdin`` works too.  Compressed archives
    are unpacked once under ``tmpdir`` (default: the system's temp directory) and removed.
    Every blob is stored once, verified, atomically; then ``index.json`` is updated once,
    atomically under a lock (as :func:`pull`), with each image's recorded names; an untagged
    image gets an unnamed entry.  A bad archive fails before the store is touched.
    """
    the_platform = _platform(platform)
    destination = LayoutDestination(Path(store) if store is not None else default_store_path())
    archive_store = ArchiveStore(tmpdir)
    try:
        queries = [await archive_store.query_for(os.fspath(a)) for a in archives]
        report = await copy(
            queries,
            archive_store,
            destination,
            platform=the_platform,
            jobs=jobs,
            progress=progress or ignore_progress,
        )
    finally:
        await archive_store.aclose()
    loaded = tuple(LoadedImage(s.name, s.digest, s.id) for s in report.result)
    return LoadResult(loaded, report.blobs_fetched, report.bytes_fetched)


async def verify(
    archive: str | os.PathLike[str],
    *,
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Check the archive at ``archive`` (plain, gzip or zstd; ``/dev/stdin`` works) as every
    loader would, and more (docs/bundles.md, "Verifying a bundle"): the tar, every layout it
    carries and their agreement, every document's and every layer's digests.  Returns a
    report whose ``ok`` says whether all passed and whose ``problem`` names the first
    failure; an unreadable or damaged archive is a report too, not an exception.  A compressed
    archive is unpacked once under ``tmpdir`` (default: the system's) and removed.
    """
    if jobs < 1:
        raise HatchwayError(f"jobs must be at least 1, not {jobs}")
    return await verify_archive(
        os.fspath(archive),
        jobs=jobs,
        tmpdir=None if tmpdir is None else os.fspath(tmpdir),
        platform=None,
        progress=progress or ignore_progress,
    )


async def list_images(
    store: str | os.PathLike[str] | None = None, *, platform: Platform | str | None = None
) -> list[ImageSummary]:
    """Every entry of the store's ``index.json`` and the image it resolves to on
    ``platform`` (default: the host's); an entry that cannot be read carries its error
    instead of an image."""
    the_store = open_store(store)
    try:
        return await the_store.list_images(_platform(platform))
    finally:
        await the_store.aclose()


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


def open_store(path: str | os.PathLike[str] | None = None) -> OCILayoutStore:
    """The OCI image layout store at ``path`` (default: :func:`default_store_path`)."""
    return OCILayoutStore(Path(path) if path is not None else default_store_path())


@asynccontextmanager
async def _sources(
    store: Source | str | os.PathLike[str] | None,
    registry: RegistryOptions | None,
    tmpdir: str | os.PathLike[str] | None,
) -> AsyncIterator[Source]:
    """The source for a copy: the caller's (left open), or the store at ``store``, the
    registries and the archives, each opened on first use and closed at the end."""
    if isinstance(store, Source):
        yield store
        return
    archives = ArchiveStore(tmpdir)
    router = Router(
        {
            Transport.STORE: lambda: open_store(store),
            Transport.DOCKER: lambda: _registry_source(registry),
            Transport.DOCKER_ARCHIVE: archives,
            Transport.OCI_ARCHIVE: archives,
            Transport.OCI: archives,
        }
    )
    try:
        yield router
    finally:
        await router.aclose()


def _registry_source(options: RegistryOptions | None) -> Source:
    # Imported here: httpx and the registry client cost start-up time no local save needs.
    from hatchway.transports.registry.source import RegistryStore

    return RegistryStore(options)


def _compression(compression: Compression | str | None) -> Compression | None:
    if isinstance(compression, str):
        try:
            return Compression(compression)
        except ValueError:
            raise HatchwayError(
                f"unknown compression {compression!r} (gzip, zstd or none)"
            ) from None
    return compression


def _platform(platform: Platform | str | None) -> Platform | None:
    if isinstance(platform, str):
        try:
            return Platform.parse(platform)
        except ValueError as exc:
            raise HatchwayError(str(exc)) from None
    return platform
