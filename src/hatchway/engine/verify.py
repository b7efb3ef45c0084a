"""``verify`` as an engine operation: a bundle's structure checked by its transport, its content
by a copy into a destination that keeps nothing.

The archive transport reads the archive the way every loader reads it and says what it holds
(:func:`~hatchway.transports.archive.structure.check_structure`).  The content — every layer's
bytes against its blob digest and its diffID, decompressing compressed ones — is then checked
the way every copy checks it: by the engine, copying every image into a
:class:`VerifyingDestination`, concurrently, ``jobs`` at a time.  Blobs nothing refers to are
hashed last.  The first problem ends the check; it is reported naming the member it concerns.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio

from hatchway.engine.copy import copy
from hatchway.errors import ArchiveDamage, DigestMismatch, HatchwayError, StoreError
from hatchway.model import Layer, Platform
from hatchway.progress import ProgressCallback
from hatchway.reference import ImageQuery
from hatchway.results import VerifyReport
from hatchway.transports.archive.source import ArchiveStore
from hatchway.transports.archive.structure import Findings, check_loose_blobs, check_structure
from hatchway.transports.base import (
    CopyContext,
    CopyPlan,
    DestinationCapabilities,
    LayerForm,
    LocalBlob,
    ResolvedImage,
    Selection,
)

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


async def verify_archive(
    path: str,
    *,
    jobs: int,
    tmpdir: str | None,
    platform: Platform | None,
    progress: ProgressCallback,
) -> VerifyReport:
    """Check the archive at ``path`` (see the module docstring); never raises a
    :class:`~hatchway.errors.HatchwayError` — the report carries it."""
    store = ArchiveStore(tmpdir)
    found = Findings(path)
    try:
        images = await check_structure(store, found)
        found.layers.update(await _verify_content(images, jobs=jobs, progress=progress))
        found.checks.append("layer digests and diffIDs")
        assert found.index is not None
        await anyio.to_thread.run_sync(check_loose_blobs, found.index, images)
        found.checks.append("every blob's name")
    except HatchwayError as exc:
        return _failed(found, exc)
    finally:
        await store.aclose()
    return _report(found, ok=True)


def _report(
    found: Findings, *, ok: bool, problem: str | None = None, member: str | None = None
) -> VerifyReport:
    index = found.index
    return VerifyReport(
        archive=found.path,
        ok=ok,
        problem=problem,
        member=member,
        compression=index.compression.value if index else "none",
        layouts=tuple(found.layouts),
        members=len(index.members) if index else 0,
        size=index.file_size if index else 0,
        images=tuple(found.images.values()),
        tags=sum(len(i.tags) for i in found.images.values()),
        layers=len(found.layers),
        layer_bytes=sum(found.layers.values()),
        checks=tuple(found.checks),
    )


def _failed(found: Findings, exc: HatchwayError) -> VerifyReport:
    member = exc.member if isinstance(exc, ArchiveDamage) else None
    if member is None:
        member = _member_in(found, exc)
    return _report(found, ok=False, problem=_line(found.path, exc, member), member=member)


def _line(path: str, exc: HatchwayError, member: str | None) -> str:
    """``PATH: member NAME: what went wrong``, naming the archive and the member once:
    messages from the reader and the engine often start with one or both already."""
    message = str(exc)
    if member is None or any(f"member {m}" in message for m in (member, repr(member))):
        return message
    what = exc.message if isinstance(exc, StoreError) else message
    what = what.removeprefix(f"{path}: ").removeprefix(f"{member}: ")
    return f"{path}: member {member}: {what}"


def _member_in(found: Findings, exc: HatchwayError) -> str | None:
    """The member an engine error is about (it names a blob digest or a diffID)."""
    candidates = [exc.expected] if isinstance(exc, DigestMismatch) else []
    candidates += _DIGEST.findall(str(exc))
    for digest in candidates:
        if digest in found.members_of:
            return found.members_of[digest]
    return None


# -- the content half: a copy into a destination that keeps nothing -----------------------------


class _Given:
    """A source that hands back images already resolved (one query per image)."""

    description = "archive"

    def __init__(self, images: Sequence[ResolvedImage]) -> None:
        self._images = {f"#{i}": image for i, image in enumerate(images)}

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        return [self._images[query.text]]

    async def aclose(self) -> None:
        pass


class _Discard:
    """A layer target that keeps nothing (the engine verified every byte it was given)."""

    name = "verification"

    def __init__(self, sizes: dict[str, int], layer: Layer) -> None:
        self._sizes = sizes
        self._layer = layer

    def write(self, data: bytes | memoryview) -> int:
        return len(data)

    async def commit(self, size: int) -> None:
        self._sizes[self._layer.diff_id] = size

    async def discard(self) -> None:
        pass


class VerifyingDestination:
    """Where ``verify`` copies a bundle: layers uncompressed (so both digests are checked),
    nothing kept.  Its result is each layer's uncompressed size, by diffID."""

    #: Every layer decompressed (both digests checked), none kept; small local layers are
    #: pure CPU work, moved in batches.
    capabilities = DestinationCapabilities(LayerForm.UNCOMPRESSED, batches_small_layers=True)
    description = "verification"

    @asynccontextmanager
    async def receive(self, plan: CopyPlan, context: CopyContext) -> AsyncIterator[_Receiver]:
        yield _Receiver()


class _Receiver:
    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    async def has_layer(self, layer: Layer) -> bool:
        return False

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        return False

    async def open_layer(self, layer: Layer) -> _Discard:
        return _Discard(self.sizes, layer)

    async def commit(self) -> dict[str, int]:
        return self.sizes


async def _verify_content(
    images: Sequence[ResolvedImage], *, jobs: int, progress: ProgressCallback
) -> dict[str, int]:
    if not images:
        return {}
    queries = [ImageQuery(f"#{i}", None, None) for i in range(len(images))]
    report = await copy(
        queries,
        _Given(images),
        VerifyingDestination(),
        selection=Selection(),
        jobs=jobs,
        progress=progress,
    )
    return report.result
