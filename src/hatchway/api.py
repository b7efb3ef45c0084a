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

from anyio.abc import ByteSendStream

from hatchway.engine.output import FdOutput, PathOutput, StreamOutput, check_destination
from hatchway.engine.save import DEFAULT_JOBS, SaveResult, SinkOpener, run_save
from hatchway.errors import HatchwayError
from hatchway.formats import ArchiveFormat
from hatchway.model import Platform
from hatchway.progress import ProgressCallback, ignore_progress
from hatchway.stores.base import Store
from hatchway.stores.oci_layout import OCILayoutStore

Output = str | os.PathLike[str] | ByteSendStream | int


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
) -> SaveResult:
    """Save the images ``names`` into one ``docker save``-compatible archive.

    ``output`` is a path (written atomically: complete or not at all), an anyio
    :class:`~anyio.abc.ByteSendStream`, or a file descriptor the caller owns (neither is
    closed here).  Nothing is written to ``output`` unless every image resolved and every
    layer was fetched and verified.  ``store`` is a :class:`Store` (left open) or the path of
    an OCI image layout (default: :func:`default_store_path`).  ``tmpdir`` holds the staging
    area (default: beside a path output, else the system temp directory).  ``fsync=True``
    flushes a path output to disk before it is renamed into place (durable across a crash;
    like ``docker save``, the default only guarantees that the file appears whole).

    Raises :class:`~hatchway.errors.HatchwayError` subclasses; see ``hatchway.errors``.
    """
    archive_format = ArchiveFormat(format) if isinstance(format, str) else format
    if isinstance(platform, str):
        try:
            platform = Platform.parse(platform)
        except ValueError as exc:
            raise HatchwayError(str(exc)) from None
    owned = not isinstance(store, Store)
    the_store: Store = store if isinstance(store, Store) else open_store(store)
    staging_parent: str | os.PathLike[str]
    if isinstance(output, (str, os.PathLike)):
        path = Path(output)
        check_destination(path)
        staging_parent = tmpdir if tmpdir is not None else path.parent
        open_sink: SinkOpener = PathOutput(path, fsync=fsync)
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
