"""The staging area of an archive copy: layers verified and kept uncompressed until the
archive is written.

A private directory (``.hatchway-staging-*``) exists only for one copy: under ``--tmpdir``, or
beside the output file, and is removed however the copy ends.  Each layer the engine moves is
written to ``<diffhex>.partial`` and renamed to ``<diffhex>`` only once the engine has verified
it (:class:`StagingFile`).  A layer that is a local uncompressed file of the source need not be
copied at all: it is recorded with ``pending_check`` and verified by the writer in the pass
that copies it into an output that any failure discards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from hatchway.errors import OutputError
from hatchway.files import write_all
from hatchway.model import Layer, hex_of


@dataclass(frozen=True, slots=True)
class StagedLayer:
    """A layer whose uncompressed content is the ``size`` bytes at ``offset`` of the file at
    ``path`` (a staged file, or a source's local file — a member inside an archive).

    ``pending_check`` is set when the bytes were not verified yet (a local file adopted from
    the source ``store``): the writer verifies them while copying them.
    """

    diff_id: str
    size: int
    path: str
    pending_check: Layer | None = None
    store: str = ""
    offset: int = 0


class StagingFile:
    """Where the engine writes one layer (a :class:`~hatchway.transports.base.LayerTarget`);
    ``on_commit`` learns the staged layer once it is verified and in place."""

    def __init__(
        self, directory: Path, layer: Layer, on_commit: Callable[[StagedLayer], None]
    ) -> None:
        self._final = directory / hex_of(layer.diff_id)
        self._partial = self._final.with_name(self._final.name + ".partial")
        self._layer = layer
        self._on_commit = on_commit
        self._fd: int | None = None
        self.name = str(self._partial)

    async def open(self) -> StagingFile:
        try:
            self._fd = await anyio.to_thread.run_sync(_create, self._partial)
        except OSError as exc:
            raise OutputError(
                f"cannot write staging file {self._partial}: {exc.strerror}"
            ) from None
        return self

    def write(self, data: bytes | memoryview) -> int:
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise OutputError(
                f"cannot write staging file {self._partial}: {exc.strerror}"
            ) from None
        return len(data)

    async def commit(self, size: int) -> None:
        await anyio.to_thread.run_sync(self._close)
        try:
            await anyio.Path(self._partial).rename(self._final)
        except OSError as exc:
            raise OutputError(f"cannot write staging file {self._final}: {exc.strerror}") from None
        self._on_commit(StagedLayer(self._layer.diff_id, size, str(self._final)))

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write staging file {self._partial}: {exc.strerror}")

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


async def make_staging_dir(parent: str | os.PathLike[str]) -> Path:
    """Create a private staging directory under ``parent``."""
    try:
        path = await anyio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix=".hatchway-staging-", dir=parent)
        )
    except OSError as exc:
        raise OutputError(
            f"cannot create a staging directory in {parent}: {exc.strerror}"
        ) from None
    return Path(path)


async def remove_staging_dir(path: Path) -> None:
    """Remove a staging directory and everything in it, even while being cancelled."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
