"""The one-shot entry points (save, pull, push, load, verify, list_images): each opens a
:class:`~hatchway.session.Session`, runs one operation through it, and closes it.  An
application that runs many operations, or several at once, keeps a session open instead
(docs/api.md, "Embedding").

All run under asyncio and trio (anyio only).  Example (asyncio; trio is the same with
``trio.run``)::

    import asyncio, hatchway

    async def main() -> None:
        result = await hatchway.save(["app:1.0", "busybox"], "images.tar", store="./store")
        print(result.bytes_written)

    asyncio.run(main())
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hatchway.formats import ArchiveFormat
from hatchway.limits import DEFAULT_JOBS
from hatchway.model import Compression, Platform
from hatchway.results import LoadResult, PullResult, PushResult, SaveResult, VerifyReport
from hatchway.session import PlatformSpec, Progress, Session, default_store_path
from hatchway.transports.archive.outputs import Output
from hatchway.transports.base import Source
from hatchway.transports.layout.source import ImageSummary, OCILayoutStore
from hatchway.transports.registry.options import RegistryOptions


async def save(
    names: Sequence[str],
    output: Output,
    *,
    store: Source | str | os.PathLike[str] | None = None,
    format: ArchiveFormat | str = ArchiveFormat.DOCKER,
    platform: PlatformSpec = None,
    referrers: bool = True,
    artifact_types: Sequence[str] = (),
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    fsync: bool = False,
    registry: RegistryOptions | None = None,
    compression: Compression | str | None = None,
    compression_level: int | None = None,
    uncompressed_layers: bool = False,
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
    many layers move at once.  ``progress`` is a callback or the send side of
    :func:`hatchway.progress_stream`.  ``fsync=True`` flushes a path output to disk before it
    is renamed into place (durable across a crash; like ``docker save``, the default only
    guarantees that the file appears whole).

    ``compression`` (``"gzip"``, ``"zstd"``, ``"none"``) compresses the whole archive; ``None``
    means as a path's suffix says (``.tar.gz``, ``.tgz``, ``.tar.zst``, ``.tar.zstd``), and no
    compression for a descriptor or a stream.  ``compression_level``: zstd 1-19 (default 3),
    gzip 0-3 (ISA-L's levels, default 2).  The compressed bytes are deterministic too.

    Raises :class:`~hatchway.errors.HatchwayError` subclasses; see ``hatchway.errors``.
    """
    async with Session(store=store, registry=registry, share_fetches=False) as session:
        return await session.save(
            names,
            output,
            format=format,
            platform=platform,
            referrers=referrers,
            artifact_types=artifact_types,
            jobs=jobs,
            tmpdir=tmpdir,
            progress=progress,
            fsync=fsync,
            compression=compression,
            compression_level=compression_level,
            uncompressed_layers=uncompressed_layers,
        )


async def pull(
    names: Sequence[str],
    *,
    store: str | os.PathLike[str] | None = None,
    registry: RegistryOptions | None = None,
    platform: PlatformSpec = None,
    referrers: bool = True,
    artifact_types: Sequence[str] = (),
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> PullResult:
    """Copy images from registries (``docker://`` optional) into the OCI layout ``store``
    (default :func:`default_store_path`, created if missing), so that a slow registry is read
    once and saved from often.

    What is stored per name: the platform manifest selected (for ``platform``, default the
    host's), its config and its layer blobs as the registry stores them, each verified before
    it is renamed into place; then one ``index.json`` entry per name (``host/repo:tag``, or
    ``host/repo@sha256:...`` for a digest), replacing an entry of the same name.  Blob writes
    are atomic and ``index.json`` is replaced atomically under a lock, so pulls may run side
    by side; a failed pull adds no entry.  See docs/registry.md.
    """
    async with Session(store=store, registry=registry, share_fetches=False) as session:
        return await session.pull(
            names,
            platform=platform,
            referrers=referrers,
            artifact_types=artifact_types,
            jobs=jobs,
            progress=progress,
        )


async def push(
    names: Sequence[str],
    to: str,
    *,
    store: Source | str | os.PathLike[str] | None = None,
    registry: RegistryOptions | None = None,
    platform: PlatformSpec = None,
    referrers: bool = True,
    artifact_types: Sequence[str] = (),
    jobs: int = DEFAULT_JOBS,
    compress_layers: str = "gzip",
    tmpdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Push the images ``names`` into the registry ``to``.

    ``names`` are what :func:`save` takes: local names (from ``store``, as for :func:`save`),
    ``docker://`` names and archives, mixed.  ``to`` is ``[docker://]HOST[:PORT][/PREFIX]`` —
    each image goes to ``HOST/PREFIX/`` + its repository path without its source registry's
    host, tags kept, and an image named only by digest or ID is pushed by digest — or
    ``[docker://]HOST[:PORT]/REPO:TAG`` for exactly one image (docs/registry.md, Push).

    Blobs the registry has are skipped, a blob needed in several repositories is uploaded once
    and mounted into the others, and every tag is written only after everything it needs is
    in place: a failed push leaves no tag pointing at missing content.  Layers stored
    compressed go up as they are; uncompressed ones are compressed with ``compress_layers``
    (``"gzip"``, ``"zstd"`` or ``"none"``), deterministically, so the manifest pushed for such
    an image names the compressed layers (same image ID, another manifest digest).  ``tmpdir``
    holds what must be staged (compressed layers, blobs fetched from registries); ``registry``
    configures both the source registries and the destination (credentials, TLS, retries).

    Raises :class:`~hatchway.errors.HatchwayError` subclasses.
    """
    async with Session(store=store, registry=registry, share_fetches=False) as session:
        return await session.push(
            names,
            to,
            platform=platform,
            referrers=referrers,
            artifact_types=artifact_types,
            jobs=jobs,
            compress_layers=compress_layers,
            tmpdir=tmpdir,
            progress=progress,
        )


async def load(
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
    async with Session(store=store, share_fetches=False) as session:
        return await session.load(
            archives,
            platform=platform,
            referrers=referrers,
            artifact_types=artifact_types,
            jobs=jobs,
            tmpdir=tmpdir,
            progress=progress,
        )


async def verify(
    archive: str | os.PathLike[str],
    *,
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check the archive at ``archive`` (plain, gzip or zstd; ``/dev/stdin`` works) as every
    loader would, and more (docs/bundles.md, "Verifying a bundle"): the tar, every layout it
    carries and their agreement, every document's and every layer's digests.  Returns a
    report whose ``ok`` says whether all passed and whose ``problem`` names the first
    failure; an unreadable or damaged archive is a report too, not an exception.  A compressed
    archive is unpacked once under ``tmpdir`` (default: the system's) and removed.
    """
    async with Session(share_fetches=False) as session:
        return await session.verify(archive, jobs=jobs, tmpdir=tmpdir, progress=progress)


async def list_images(
    store: str | os.PathLike[str] | None = None, *, platform: Platform | str | None = None
) -> list[ImageSummary]:
    """Every entry of the store's ``index.json`` and the image it resolves to on
    ``platform`` (default: the host's); an entry that cannot be read carries its error
    instead of an image."""
    async with Session(store=store, share_fetches=False) as session:
        return await session.list_images(platform=platform)


def open_store(path: str | os.PathLike[str] | None = None) -> OCILayoutStore:
    """The OCI image layout store at ``path`` (default: :func:`default_store_path`)."""
    return OCILayoutStore(path if path is not None else default_store_path())
