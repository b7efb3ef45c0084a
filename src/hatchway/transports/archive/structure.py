"""The structural half of checking a bundle (``hatchway verify``): what the archive is, read
the way every loader reads it (docs/bundles.md, "Verifying a bundle").

The tar is well formed (:class:`~.tarindex.TarIndex`: headers, no duplicate, absolute or
``..`` names, no truncated member, its end blocks); every layout the archive carries is read
as its loader reads it — ``manifest.json`` (configs named after their digest hash to it, layer
counts match the diffIDs), the legacy v1 directories (ids, parents, a ``layer.tar`` each),
``index.json`` (every manifest, index and config matches its descriptor's digest and size;
every layer descriptor's size is its member's) — and the layouts agree: ``index.json`` and
``manifest.json`` describe the same images and layers, ``repositories`` names images and top
layers that exist.  Blobs nothing refers to are hashed against their names too
(:func:`check_loose_blobs`).

The content half — every layer's bytes against its blob digest and diffID — is a copy, so it
is the engine's (``hatchway.engine.verify``), run on the images :func:`check_structure`
returns.  What was found is recorded in :class:`Findings` as it is found, so that a check that
fails half-way still reports what it saw.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import anyio

from hatchway.errors import ArchiveDamage
from hatchway.oci_layout import entry_reference
from hatchway.reference import Transport
from hatchway.results import VerifiedImage
from hatchway.transports.archive.docker_reader import check_v1_directories, raw_repositories
from hatchway.transports.archive.files import TarFiles, blob_name
from hatchway.transports.archive.source import ArchiveStore, DockerArchive, OCILayout
from hatchway.transports.archive.tarindex import TarIndex
from hatchway.transports.base import ResolvedImage, Selection

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_V1_JSON = re.compile(r"[a-f0-9]{64}/json")


@dataclass(slots=True)
class Findings:
    """What the checks of one archive found so far (kept up to date while they run)."""

    path: str
    index: TarIndex | None = None
    layouts: list[str] = field(default_factory=list)
    images: dict[str, VerifiedImage] = field(default_factory=dict)
    #: Uncompressed bytes of each distinct layer, by diffID (0 until its content is checked).
    layers: dict[str, int] = field(default_factory=dict)
    #: The member that holds each layer, by blob digest and by diffID (to name it in errors).
    members_of: dict[str, str] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


async def check_structure(store: ArchiveStore, state: Findings) -> list[ResolvedImage]:
    """Check the archive at ``state.path`` and return every image it describes (to have its
    content checked).  Raises :class:`~hatchway.errors.HatchwayError` for the first problem."""
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
    return images


async def _oci_images(layout: OCILayout) -> list[ResolvedImage]:
    """Every image ``index.json`` describes: each entry, every platform of an index that the
    archive holds (indexes inside indexes too), with their referrers."""
    everything = Selection(all_platforms=True, referrers=True, held_only=True)
    images = []
    for entry in layout.entries:
        name = entry_reference(entry.annotations)
        for image in await layout.images(entry, blob_name(entry.digest), everything):
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


def check_loose_blobs(index: TarIndex, images: Sequence[ResolvedImage]) -> None:
    """Blocking: blobs nothing in ``images`` refers to still hash to their names."""
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
