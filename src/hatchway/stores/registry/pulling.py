"""``hatchway pull``: copy images from registries into the local OCI image layout store.

What is stored, per name: the **platform manifest** that was selected (for an index or
manifest list: the one for ``platform``, default the host's — as ``skopeo copy`` without
``--all`` does), its config and its layer blobs *as the registry stores them* (compressed,
byte for byte), each verified against its digest and size before it is renamed into place.
Storing the chosen manifest rather than the whole index keeps the layout complete (every
descriptor it holds points at content it has), so a later ``hatchway save`` from the store
needs no ``--platform`` and yields the very archive a save from the registry would.

Naming: the ``index.json`` entry of ``docker://HOST/REPO:TAG`` carries
``io.containerd.image.name`` = ``HOST/REPO:TAG`` fully qualified (``docker.io/library/...``
for Docker Hub) and ``org.opencontainers.image.ref.name`` = ``TAG``, and replaces an older
entry of the same name.  ``docker://HOST/REPO@DIGEST`` is recorded as
``io.containerd.image.name`` = ``HOST/REPO@DIGEST`` only (no tag; reachable by its image ID).

Order of effects: every blob is written first, then ``index.json`` is updated once, under its
lock (see :mod:`.layout_writer`).  A failed pull never adds an entry; complete verified blobs it
already wrote stay (a later pull reuses them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from hatchway.concurrency import KeyedOnce, collapse_errors, gather_in_order
from hatchway.errors import HatchwayError
from hatchway.model import Descriptor, Layer, Platform
from hatchway.progress import (
    LayerAdvanced,
    LayerStaged,
    LayerStarted,
    ProgressCallback,
    SaveFinished,
    SaveStarted,
    ignore_progress,
)
from hatchway.reference import DOCKER_TRANSPORT, ImageQuery, parse_query
from hatchway.stores.registry.layout_writer import (
    IMAGE_NAME_ANNOTATION,
    REF_NAME_ANNOTATION,
    LayoutWriter,
)
from hatchway.stores.registry.options import RegistryOptions
from hatchway.stores.registry.store import RegistryImage, RegistryStore, RepositorySource

DEFAULT_JOBS = 8


@dataclass(frozen=True, slots=True)
class PulledImage:
    """One image now in the store: the name it is stored under, its manifest and image ID."""

    name: str
    manifest_digest: str
    id: str


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull did: the images stored, and how many blobs and bytes were downloaded."""

    images: tuple[PulledImage, ...]
    blobs_fetched: int
    bytes_fetched: int


async def pull(
    names: Sequence[str],
    store_dir: str | os.PathLike[str],
    *,
    options: RegistryOptions | None = None,
    registry: RegistryStore | None = None,
    platform: Platform | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressCallback | None = None,
) -> PullResult:
    """Pull ``names`` (``docker://HOST/REPO[:TAG|@DIGEST]``; the prefix may be omitted) into
    the OCI layout at ``store_dir``, creating it if missing.

    ``registry`` reuses an open :class:`RegistryStore` (left open); otherwise one is made from
    ``options`` and closed.  Progress is reported with the save events (``SaveStarted``,
    ``LayerStarted``/``LayerAdvanced``/``LayerStaged`` per layer, ``SaveFinished`` with the
    bytes downloaded).  Raises :class:`~hatchway.errors.HatchwayError` subclasses; on any error
    ``index.json`` is left as it was.
    """
    if not names:
        raise HatchwayError("no image names given")
    if jobs < 1:
        raise HatchwayError(f"jobs must be at least 1, not {jobs}")
    report = progress or ignore_progress
    queries = [_registry_query(name) for name in names]
    owned = registry is None
    store = registry if registry is not None else RegistryStore(options)
    try:
        images = await _fetch_all(store, queries, platform, jobs)
        writer = LayoutWriter(store_dir)
        await writer.ensure_layout()
        return await _Copy(writer, report, jobs).run(store, images)
    finally:
        if owned:
            await store.aclose()


def _registry_query(name: str) -> ImageQuery:
    text = name if name.startswith(DOCKER_TRANSPORT) else DOCKER_TRANSPORT + name
    return parse_query(text)


async def _fetch_all(
    store: RegistryStore, queries: list[ImageQuery], platform: Platform | None, jobs: int
) -> list[RegistryImage]:
    """Fetch every image concurrently; the first failing name (in order) is reported."""

    async def fetch(query: ImageQuery) -> RegistryImage:
        assert query.reference is not None
        return await store.fetch(query.reference, platform, query.text)

    return await gather_in_order(queries, fetch, limit=jobs)


class _Copy:
    """The blob copies of one pull: each distinct blob once, ``jobs`` layers at a time."""

    def __init__(self, writer: LayoutWriter, progress: ProgressCallback, jobs: int) -> None:
        self.writer = writer
        self.progress = progress
        self.slots = anyio.CapacityLimiter(jobs)
        self.once: KeyedOnce[str, int] = KeyedOnce()

    async def run(self, store: RegistryStore, images: list[RegistryImage]) -> PullResult:
        layers = {la.blob.digest: (la, i.image.source) for i in images for la in i.image.layers}
        total = sum(la.blob.size for la, _ in layers.values())
        self.progress(SaveStarted(len(images), len(layers), total))
        with collapse_errors():
            async with anyio.create_task_group() as tg:
                for layer, source in layers.values():
                    assert isinstance(source, RepositorySource)
                    tg.start_soon(self._layer, layer, source)
        for image in images:
            await self._small(image.manifest.config, image.config.raw)
            await self._small(image.manifest_descriptor, image.manifest_raw)
        await self.writer.add_entries([_index_entry(image) for image in images])
        fetched = self.once.results()
        done = sum(fetched.values())
        self.progress(SaveFinished(done))
        return PullResult(
            tuple(_pulled(image) for image in images),
            sum(1 for n in fetched.values() if n),
            done,
        )

    async def _layer(self, layer: Layer, source: RepositorySource) -> None:
        await self.once.run(layer.blob.digest, lambda: self._copy_layer(layer, source))

    async def _copy_layer(self, layer: Layer, source: RepositorySource) -> int:
        if await self.writer.has_blob(layer.blob):
            return 0
        async with self.slots:
            self.progress(LayerStarted(layer.diff_id, layer.blob.size))

            def advanced(n: int) -> None:
                self.progress(LayerAdvanced(layer.diff_id, n))

            async with source.open_blob(layer.blob) as chunks:
                await self.writer.write_stream(layer.blob, chunks, advanced)
            self.progress(LayerStaged(layer.diff_id, layer.blob.size))
        return layer.blob.size

    async def _small(self, descriptor: Descriptor, raw: bytes) -> None:
        if not await self.writer.has_blob(descriptor):
            await self.writer.write_bytes(descriptor, raw)


def _index_entry(image: RegistryImage) -> dict[str, Any]:
    d = image.manifest_descriptor
    entry: dict[str, Any] = {"mediaType": image.manifest.media_type, "digest": d.digest}
    entry["size"] = d.size
    ref = image.reference
    if ref.digest is None:
        entry["annotations"] = {
            IMAGE_NAME_ANNOTATION: ref.qualified_tag(),
            REF_NAME_ANNOTATION: ref.tag or "latest",
        }
    else:
        entry["annotations"] = {IMAGE_NAME_ANNOTATION: f"{ref.name}@{ref.digest}"}
    if d.platform is not None:
        platform = {"architecture": d.platform.architecture, "os": d.platform.os}
        if d.platform.variant:
            platform["variant"] = d.platform.variant
        entry["platform"] = platform
    return entry


def _pulled(image: RegistryImage) -> PulledImage:
    ref = image.reference
    name = f"{ref.name}@{ref.digest}" if ref.digest else ref.qualified_tag()
    return PulledImage(name, image.manifest_descriptor.digest, image.config.id)
