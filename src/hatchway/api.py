"""The library entry points: :func:`save` and :func:`open_store`.

Both run under asyncio and trio (anyio only).  Example (asyncio; trio is the same with
``trio.run``)::

    import asyncio, hatchway

    async def main() -> None:
        result = await hatchway.save(["app:1.0", "busybox"], "images.tar", store="./store")
        print(result.bytes_written)

    asyncio.run(main())
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from anyio.abc import ByteSendStream

from hatchway.engine.output import FdOutput, PathOutput, StreamOutput, output_for
from hatchway.engine.save import DEFAULT_JOBS, SaveResult, SinkOpener, run_save
from hatchway.errors import HatchwayError
from hatchway.formats import ArchiveFormat
from hatchway.model import Platform
from hatchway.progress import ProgressCallback, ignore_progress
from hatchway.reference import DOCKER_TRANSPORT
from hatchway.stores.base import Store
from hatchway.stores.oci_layout import OCILayoutStore
from hatchway.stores.registry.options import RegistryOptions

if TYPE_CHECKING:
    from hatchway.stores.registry.pulling import PullResult

Output = str | os.PathLike[str] | ByteSendStream | int


def _with_registries(local: Store, options: RegistryOptions | None) -> Store:
    # Imported here: httpx and the registry client cost start-up time no local save needs.
    from hatchway.stores.registry import RegistryStore
    from hatchway.stores.router import RouterStore

    return RouterStore(local, RegistryStore(options))


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
    (default :func:`default_store_path`), so a slow registry is read once and saved often.

    Blob writes are atomic and ``index.json`` is replaced atomically under a lock, so two
    pulls may run at once.  See :func:`hatchway.stores.registry.pulling`.
    """
    from hatchway.stores.registry.pulling import pull as pull_images

    return await pull_images(
        names,
        Path(store) if store is not None else default_store_path(),
        options=registry,
        platform=_platform(platform),
        jobs=jobs,
        progress=progress,
    )


def _platform(platform: Platform | str | None) -> Platform | None:
    if isinstance(platform, str):
        try:
            return Platform.parse(platform)
        except ValueError as exc:
            raise HatchwayError(str(exc)) from None
    return platform


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


async def save(
    names: Sequence[str],
    output: Output,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    format: ArchiveFormat | str = ArchiveFormat.DOCKER,
    platform: Platform | str | None = None,
    jobs: int = DEFAULT_JOBS,
    tmpdir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    fsync: bool = False,
    registry: RegistryOptions | None = None,
) -> SaveResult:
    """Save the images ``names`` into one ``docker save``-compatible archive.

    ``output`` is a path (written atomically: complete or not at all), an anyio
    :class:`~anyio.abc.ByteSendStream`, or a file descriptor the caller owns (neither is
    closed here).  Nothing is written to ``output`` unless every image resolved and every
    layer was fetched and verified.  ``store`` is a :class:`Store` (left open) or the path of
    an OCI image layout (default: :func:`default_store_path`).  ``tmpdir`` holds the staging
    area (default: beside a path output, else the system temp directory).  Names written
    ``docker://HOST/REPO[:TAG|@DIGEST]`` are fetched from registries, configured by
    ``registry`` (credentials, insecure hosts, CA; see docs/registry.md).  ``fsync=True``
    flushes a path output to disk before it is renamed into place (durable across a crash;
    like ``docker save``, the default only guarantees that the file appears whole).

    Raises :class:`~hatchway.errors.HatchwayError` subclasses; see ``hatchway.errors``.
    """
    archive_format = ArchiveFormat(format) if isinstance(format, str) else format
    platform = _platform(platform)
    owned = not isinstance(store, Store)
    the_store: Store = store if isinstance(store, Store) else open_store(store)
    if owned and any(name.startswith(DOCKER_TRANSPORT) for name in names):
        the_store = _with_registries(the_store, registry)
    staging_parent: str | os.PathLike[str]
    if isinstance(output, (str, os.PathLike)):
        path = Path(output)
        open_sink: SinkOpener = output_for(path, fsync=fsync)
        default_parent = path.parent if isinstance(open_sink, PathOutput) else tempfile.gettempdir()
        staging_parent = tmpdir if tmpdir is not None else default_parent
    elif isinstance(output, int):
        staging_parent = tmpdir if tmpdir is not None else tempfile.gettempdir()
        open_sink = FdOutput(output)
    else:
        staging_parent = tmpdir if tmpdir is not None else tempfile.gettempdir()
        open_sink = StreamOutput(output)
    try:
        return await run_save(
            names,
            the_store,
            open_sink,
            staging_parent=staging_parent,
            archive_format=archive_format,
            platform=platform,
            jobs=jobs,
            progress=progress or ignore_progress,
        )
    finally:
        if owned:
            await the_store.aclose()
