"""The staging area of an archive copy: layers verified and kept uncompressed until the archive is
written.

A private directory (``.hatchway-staging-*``) exists only for one copy: under ``--tmpdir``, or
beside the output file, and is removed however the copy ends. Each layer the engine moves is
written to ``<hex>.partial`` and renamed to ``<hex>`` only once the engine has verified it
(:class:`StagingFile`); the hex is the layer's key in the archive's layer form — its diffID for
uncompressed layers, its blob digest for layers kept as stored. A layer that is a local file of
the source need not be copied at all: it is recorded with ``pending_check`` and verified by the
writer in the pass that copies it into an output that any failure discards.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from hatchway.errors import OutputError
from hatchway.files import write_all
from hatchway.limits import SMALL_STAGED
from hatchway.model import Layer, hex_of


@dataclass(frozen=True, slots=True)
class StagedLayer:
    """A layer whose bytes in the archive (uncompressed, or as stored: ``stored``) are the
    ``size`` bytes at ``offset`` of the file at ``path`` (a staged file, or a source's local
    file — a member inside an archive); ``key`` is what the archive's plan names it by.

    ``pending_check`` is set when the bytes were not verified yet (a local file adopted from
    the source ``store``): the writer verifies them while copying them.
    """

    key: str
    size: int
    path: str
    pending_check: Layer | None = None
    store: str = ""
    offset: int = 0
    #: The layer's bytes themselves, for a small layer kept in memory (``path`` is then "").
    data: bytes | None = None
    #: The bytes are the stored blob (checked as such), not the uncompressed layer.
    stored: bool = False


class MemoryBudget:
    """How many bytes of small layers a copy may keep in memory instead of staging files.

    Shared by the targets of one copy, which write from worker threads (hence the lock).
    """

    def __init__(self, total: int) -> None:
        self._left = total
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if n > self._left:
                return False
            self._left -= n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self._left += n


class StagingFile:
    """Where the engine writes one layer (a :class:`~hatchway.transports.base.LayerTarget`);
    ``on_commit`` learns the staged layer once it is verified and in place.

    A layer starts in memory — up to ``SMALL_STAGED`` bytes, while the copy's
    :class:`MemoryBudget` lasts — and spills into ``<diffhex>.partial`` (created on a worker
    thread, as part of the write that overflows) only when it grows past that.  The many tiny
    layers of real images thus cost no file, no rename and no thread hop of their own.
    """

    def __init__(
        self,
        directory: Path,
        layer: Layer,
        key: str,
        on_commit: Callable[[StagedLayer], None],
        budget: MemoryBudget,
    ) -> None:
        self._key = key
        self._final = directory / hex_of(key)
        self._partial = self._final.with_name(self._final.name + ".partial")
        self._layer = layer
        self._on_commit = on_commit
        self._budget = budget
        self._memory: bytearray | None = bytearray()
        self._fd: int | None = None
        self.name = str(self._partial)

    def write(self, data: bytes | memoryview) -> int:
        memory = self._memory
        if memory is not None:
            if len(memory) + len(data) <= SMALL_STAGED and self._budget.take(len(data)):
                memory += data
                return len(data)
            self._spill()
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise self._error(exc) from None
        return len(data)

    def _spill(self) -> None:
        """Move what is in memory into the staging file, and continue there."""
        memory, self._memory = self._memory, None
        assert memory is not None
        self._budget.give(len(memory))
        try:
            self._fd = _create(self._partial)
            write_all(self._fd, memoryview(memory))
        except OSError as exc:
            raise self._error(exc) from None

    async def commit(self, size: int) -> None:
        if self._memory is not None:
            data = bytes(self._memory)
            self._on_commit(StagedLayer(self._key, size, "", data=data))
            return
        await anyio.to_thread.run_sync(self._close)
        try:
            await anyio.Path(self._partial).rename(self._final)
        except OSError as exc:
            raise OutputError(f"cannot write staging file {self._final}: {exc.strerror}") from None
        self._on_commit(StagedLayer(self._key, size, str(self._final)))

    async def discard(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            self._budget.give(len(memory))
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
