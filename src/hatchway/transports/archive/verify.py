"""Checking a bundle the way every loader would, and more: ``hatchway verify``.

Two halves (docs/bundles.md, "Verifying a bundle"):

* **Structure**, here: the tar is well formed (:class:`~.tarindex.TarIndex`: headers, no
  duplicate, absolute or ``..`` names, no truncated member, its end blocks); every layout
  the archive carries is read as its loader reads it — ``manifest.json`` (configs named
  after their digest hash to it, layer counts match the diffIDs), the legacy v1 directories
  (ids, parents, a ``layer.tar`` each), ``index.json`` (every manifest, index and config matches
  its descriptor's digest and size; every layer descriptor's size is its member's) — and the
  layouts agree: ``index.json`` and ``manifest.json`` describe the same images and layers,
  ``repositories`` names images and top layers that exist.  Blobs nothing refers to are
  hashed against their names too.
* **Content**, by the engine: a copy of every image into a :class:`VerifyingDestination`, which
  keeps nothing.  Its layers are uncompressed, so the engine hashes every layer (decompressing
  compressed ones) against its blob digest and its diffID, concurrently, ``jobs`` at a time.

The first problem ends the check; it is reported naming the member it concerns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import anyio

from hatchway.engine.copy import copy
from hatchway.errors import DigestMismatch, HatchwayError, StoreError
from hatchway.model import INDEX_TYPES, Layer, Platform, parse_index, parse_json_object
from hatchway.progress import ProgressCallback
from hatchway.reference import ImageQuery, Transport
from hatchway.transports.archive.docker_reader import check_v1_directories, raw_repositories
from hatchway.transports.archive.files import TarFiles, blob_name
from hatchway.transports.archive.source import ArchiveStore, DockerArchive, OCILayout
from hatchway.transports.archive.tarindex import ArchiveDamage, TarIndex
from hatchway.transports.base import (
    CopyContext,
    CopyPlan,
    DestinationCapabilities,
    LayerForm,
    LocalBlob,
    ResolvedImage,
)
from hatchway.transports.layout.spec import entry_reference

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_V1_JSON = re.compile(r"[a-f0-9]{64}/json")


@dataclass(frozen=True, slots=True)
class VerifiedImage:
    """One image found in a bundle: its ID, its recorded names and its layer count."""

    id: str
    tags: tuple[str, ...]
    layers: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify`` found in one archive.

    ``ok`` is true when every check passed; otherwise ``problem`` is the first failure (one
    line) and ``member`` the member it names (``None`` for the tar as a whole).  ``layouts``
    lists what the archive carries (``manifest.json``, ``index.json``, ``repositories``, ``v1``
    for legacy directories); ``compression`` how the file was compressed; ``size`` the tar's
    size; ``layers`` the distinct layers and ``layer_bytes`` their uncompressed bytes.
    """

    archive: str
    ok: bool
    problem: str | None = None
    member: str | None = None
    compression: str = "none"
    layouts: tuple[str, ...] = ()
    members: int = 0
    size: int = 0
    images: tuple[VerifiedImage, ...] = ()
    tags: int = 0
    layers: int = 0
    layer_bytes: int = 0
    checks: tuple[str, ...] = field(default=())


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
    state = _State(path)
    try:
        await _verify(store, state, jobs=jobs, progress=progress)
    except HatchwayError as exc:
        return state.failed(exc)
    finally:
        await store.aclose()
    return state.report(ok=True)


class _State:
    """What a check found so far (to report it, also when it fails half-way)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.index: TarIndex | None = None
        self.layouts: list[str] = []
        self.images: dict[str, VerifiedImage] = {}
        self.layers: dict[str, int] = {}
        self.members_of: dict[str, str] = {}
        self.checks: list[str] = []

    def report(
        self, *, ok: bool, problem: str | None = None, member: str | None = None
    ) -> VerifyReport:
        index = self.index
        return VerifyReport(
            archive=self.path,
            ok=ok,
            problem=problem,
            member=member,
            compression=index.compression.value if index else "none",
            layouts=tuple(self.layouts),
            members=len(index.members) if index else 0,
            size=index.file_size if index else 0,
            images=tuple(self.images.values()),
            tags=sum(len(i.tags) for i in self.images.values()),
            layers=len(self.layers),
            layer_bytes=sum(self.layers.values()),
            checks=tuple(self.checks),
        )

    def failed(self, exc: HatchwayError) -> VerifyReport:
        member = getattr(exc, "member", None)
        if member is None:
            member = self._member_in(exc)
        return self.report(ok=False, problem=self._line(exc, member), member=member)

    def _line(self, exc: HatchwayError, member: str | None) -> str:
        """``PATH: member NAME: what went wrong``, naming the archive and the member once:
        messages from the reader and the engine often start with one or both already."""
        message = str(exc)
        if member is None or any(f"member {m}" in message for m in (member, repr(member))):
            return message
        what = exc.message if isinstance(exc, StoreError) else message
        what = what.removeprefix(f"{self.path}: ").removeprefix(f"{member}: ")
        return f"{self.path}: member {member}: {what}"

    def _member_in(self, exc: HatchwayError) -> str | None:
        """The member an engine error is about (it names a blob digest or a diffID)."""
        candidates = [exc.expected] if isinstance(exc, DigestMismatch) else []
        candidates += _DIGEST.findall(str(exc))
        for digest in candidates:
            if digest in self.members_of:
                return self.members_of[digest]
        return None


async def _verify(
    store: ArchiveStore, state: _State, *, jobs: int, progress: ProgressCallback
) -> None:
    index = await store.index(state.path)  # the tar's own checks, as for load and save
    state.index = index
    state.checks.append("tar")
    images: list[ResolvedImage] = []
    docker: DockerArchive | None = None
    has_v1 = any(_V1_JSON.fullmatch(n) for n in index.members)
    if "manifest.json" in index or "repositories" in index or has_v1:
        opened = await store.open(Transport.DOCKER_ARCHIVE, state.path)
        assert isinstance(opened, DockerArchive)
        docker = opened
        state.layouts.append("manifest.json" if "manifest.json" in index else "legacy")
        images += docker.images
        for image, recorded in zip(docker.images, docker.recorded, strict=True):
            state.images.setdefault(image.id, VerifiedImage(image.id, recorded, len(image.layers)))
        state.checks.append("configs")
    if has_v1:
        await anyio.to_thread.run_sync(check_v1_directories, index)
        state.layouts.append("v1")
        state.checks.append("v1 ids and parents")
    if "index.json" in index or "oci-layout" in index:
        layout = await store.open(Transport.OCI_ARCHIVE, state.path)
        assert isinstance(layout, OCILayout)
        state.layouts.append("index.json")
        oci_images = await _oci_images(layout)
        _check_descriptor_sizes(index, oci_images)
        state.checks.append("index.json documents")
        if docker is not None:
            _agree(index, docker, oci_images)
            state.checks.append("index.json agrees with manifest.json")
        else:
            for image in oci_images:
                tags = tuple(t.recorded_tag() for t in image.tags)
                prior = state.images.get(image.id)
                state.images[image.id] = VerifiedImage(
                    image.id, (prior.tags if prior else ()) + tags, len(image.layers)
                )
        images += oci_images
    if not images and docker is None and "index.json" not in index:
        raise ArchiveDamage(
            state.path, "not an image archive: no manifest.json, repositories or index.json"
        )
    if "repositories" in index:
        state.layouts.append("repositories")
        if docker is not None and "manifest.json" in index:
            await anyio.to_thread.run_sync(_check_repositories, index, docker)
        state.checks.append("repositories")
    at = _offsets(index)
    for image in images:
        for layer in image.layers:
            state.layers.setdefault(layer.diff_id, 0)
            local = image.source.local_file(layer.blob)
            member = at.get(local.offset) if local is not None else None
            if member is not None:
                state.members_of.setdefault(layer.blob.digest, member)
                state.members_of.setdefault(layer.diff_id, member)
    sizes = await _verify_content(images, jobs=jobs, progress=progress)
    state.layers.update(sizes)
    state.checks.append("layer digests and diffIDs")
    await anyio.to_thread.run_sync(_check_loose_blobs, index, images)
    state.checks.append("every blob's name")


async def _oci_images(layout: OCILayout) -> list[ResolvedImage]:
    """Every image ``index.json`` describes: each entry, and every platform of an index."""
    images = []
    for entry in layout.entries:
        if entry.media_type in INDEX_TYPES:
            raw = await layout.read_blob(entry)
            children = parse_index(parse_json_object(raw, blob_name(entry.digest)), "index")
            for child in children:
                if child.platform is None:
                    continue
                image = await layout.image(child, blob_name(child.digest), child.platform)
                images.append(image)
        else:
            image = await layout.image(entry, blob_name(entry.digest), None)
            name = entry_reference(entry.annotations)
            images.append(replace(image, tags=(name,) if name else ()))
    return images


def _check_descriptor_sizes(index: TarIndex, images: Sequence[ResolvedImage]) -> None:
    for image in images:
        for layer in image.layers:
            name = blob_name(layer.blob.digest)
            member = index.file(name)
            if member.size != layer.blob.size:
                raise ArchiveDamage(
                    index.description,
                    f"member {name}: {member.size} bytes, its descriptor in manifest "
                    f"{image.manifest_digest} says {layer.blob.size}",
                    name,
                )


def _agree(index: TarIndex, docker: DockerArchive, oci: Sequence[ResolvedImage]) -> None:
    """``index.json`` and ``manifest.json`` describe the same images with the same layers."""
    by_id = {image.id: image for image in docker.images}
    oci_ids = {image.id for image in oci}
    for image in oci:
        twin = by_id.get(image.id)
        if twin is None:
            raise ArchiveDamage(
                index.description,
                f"index.json: image {image.id} is not in manifest.json",
                "index.json",
            )
        if [la.diff_id for la in image.layers] != [la.diff_id for la in twin.layers]:
            raise ArchiveDamage(
                index.description,
                f"index.json: image {image.id} has other layers than in manifest.json",
                "index.json",
            )
    for image_id in by_id:
        if image_id not in oci_ids:
            raise ArchiveDamage(
                index.description,
                f"manifest.json: image {image_id} is not in index.json",
                "manifest.json",
            )


def _check_repositories(index: TarIndex, docker: DockerArchive) -> None:
    """Each ``repositories`` tag is recorded in ``manifest.json`` and names its image's top
    layer (a v1 directory, or the top layer's blob)."""
    tops: dict[str, str] = {}
    at = _offsets(index)
    for image, recorded in zip(docker.images, docker.recorded, strict=True):
        if not image.layers:
            continue
        local = image.source.local_file(image.layers[-1].blob)
        member = (at.get(local.offset) if local is not None else None) or ""
        top = member.removesuffix("/layer.tar").rsplit("/", 1)[-1]
        for tag in recorded:
            tops[tag] = top
        for ref in image.tags:
            tops[ref.recorded_tag()] = top
    for tag, value in raw_repositories(index):
        expected = tops.get(tag)
        if expected is None:
            raise ArchiveDamage(
                index.description, f"repositories: {tag} is not in manifest.json", "repositories"
            )
        if value != expected and f"{value}/json" not in index:
            raise ArchiveDamage(
                index.description,
                f"repositories: {tag} names {value}, not its image's top layer",
                "repositories",
            )


def _offsets(index: TarIndex) -> dict[int, str]:
    """Which file member's body starts at each offset."""
    return {m.offset: m.name for m in index.members.values() if m.kind == "file"}


def _check_loose_blobs(index: TarIndex, images: Sequence[ResolvedImage]) -> None:
    """Blobs nothing refers to still hash to their names."""
    referenced = set()
    for image in images:
        referenced.add(image.descriptor.digest)
        referenced.add(image.manifest.config.digest)
        referenced.update(layer.blob.digest for layer in image.layers)
    files = TarFiles(index)
    for name, member in index.members.items():
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != "blobs" or member.kind != "file":
            continue
        digest = f"{parts[1]}:{parts[2]}"
        if digest in referenced:
            continue
        if parts[1] != "sha256":
            continue
        hasher = hashlib.sha256()
        for chunk in files.chunks(name):
            hasher.update(chunk)
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise ArchiveDamage(
                index.description,
                f"member {name}: digest mismatch: named {digest}, holds {actual}",
                name,
            )


# -- the content half: a copy into a destination that keeps nothing -----------------------------


class _Given:
    """A source that hands back images already resolved (one query per image)."""

    description = "archive"

    def __init__(self, images: Sequence[ResolvedImage]) -> None:
        self._images = {f"#{i}": image for i, image in enumerate(images)}

    async def resolve(self, query: ImageQuery, platform: Platform | None) -> list[ResolvedImage]:
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
        queries, _Given(images), VerifyingDestination(), platform=None, jobs=jobs, progress=progress
    )
    return report.result
