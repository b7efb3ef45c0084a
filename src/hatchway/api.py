"""The one-shot entry points: each opens a :class:`~hatchway.session.Session`, runs one
operation through it, and closes it.  An application that runs many operations, or several at
once, keeps a session open instead (docs/api.md, "Embedding").

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
from hatchway.results import PullResult, SaveResult
from hatchway.session import Progress, Session, default_store_path
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
    platform: Platform | str | None = None,
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
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
    async with Session(store=store, registry=registry) as session:
        return await session.save(
            names,
            output,
            format=format,
            platform=platform,
            jobs=jobs,
            tmpdir=tmpdir,
            progress=progress,
            fsync=fsync,
            compression=compression,
            compression_level=compression_level,
        )


async def pull(
    names: Sequence[str],
    *,
    store: str | os.PathLike[str] | None = None,
    registry: RegistryOptions | None = None,
    platform: Platform | str | None = None,
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
    async with Session(store=store, registry=registry) as session:
        return await session.pull(names, platform=platform, jobs=jobs, progress=progress)


async def list_images(
    store: str | os.PathLike[str] | None = None, *, platform: Platform | str | None = None
) -> list[ImageSummary]:
    """Every entry of the store's ``index.json`` and the image it resolves to on
    ``platform`` (default: the host's); an entry that cannot be read carries its error
    instead of an image."""
    async with Session(store=store) as session:
        return await session.list_images(platform=platform)


def open_store(path: str | os.PathLike[str] | None = None) -> OCILayoutStore:
    """The OCI image layout store at ``path`` (default: :func:`default_store_path`)."""
    return OCILayoutStore(path if path is not None else default_store_path())
