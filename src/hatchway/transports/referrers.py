"""Referrers kept in an OCI image layout — the store, ``oci:`` directories, OCI archives and
hatchway's bundles: which manifests refer to an image, found once per layout.

A layout keeps a referrer as an ``index.json`` entry that names no image (docs/formats.md,
"Referrers"): hatchway's entries say what they refer to (``io.hatchway.referrer.subject``)
and, for cosign's tag-based ones, their tag (``io.hatchway.referrer.tag``); an entry of
another tool may instead carry only the manifest, whose ``subject`` field says it (OCI 1.1),
or be *named* by a cosign tag (``repo:sha256-<hex>.sig``, ``.att``, ``.sbom``), as tools
that keep signatures as tags write it.  Unnamed entries that are images (untagged images)
are not referrers.

What an image takes along: the referrers of its manifest and of the indexes its name led
through, and theirs in turn (a signature of an SBOM), to a few levels, as the selection says
(:meth:`~hatchway.transports.base.Selection.takes_type`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio

from hatchway.model import INDEX_TYPES, Descriptor, document_kind, is_image_manifest
from hatchway.oci_layout import (
    REFERRER_SUBJECT_ANNOTATION,
    REFERRER_TAG_ANNOTATION,
    is_referrer_entry,
    stored_name,
)
from hatchway.transports.base import Artifact, BlobSource, Document, ResolvedImage, Selection
from hatchway.transports.images import artifact_of

#: cosign's tag-based referrers: ``sha256-<hex>.sig`` (signatures), ``.att`` (attestations),
#: ``.sbom`` (SBOMs), in the repository of the image whose digest they name.
COSIGN_TAG = re.compile(r"sha256-([a-f0-9]{64})\.(sig|att|sbom)")
#: How many levels of referrers of referrers an image takes along.
REFERRER_DEPTH = 3

ReadDocument = Callable[[Descriptor], Awaitable[bytes]]


def is_referrer(entry: Descriptor) -> bool:
    """Whether an ``index.json`` entry keeps a referrer rather than names an image: one of
    hatchway's referrer entries, or one named by a cosign tag."""
    annotations = entry.annotations
    if is_referrer_entry(annotations):
        return True
    name = stored_name(annotations)
    return name is not None and cosign_subject(_tag_of(name)) is not None


def _tag_of(name: str) -> str:
    """The tag of a stored name (``repo:tag``), or the name itself when it is a bare tag."""
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[-1] if ":" in last else name


def cosign_subject(tag: str) -> str | None:
    """The digest a cosign tag names (``sha256-<hex>.sig`` → ``sha256:<hex>``), if it is one."""
    found = COSIGN_TAG.fullmatch(tag)
    return f"sha256:{found.group(1)}" if found else None


class LayoutReferrers:
    """The referrers among a layout's ``index.json`` ``entries``, by the digest they refer to
    (read once, on first use, with ``read``; their blobs are served by ``source``)."""

    def __init__(
        self, entries: Sequence[Descriptor], read: ReadDocument, source: BlobSource
    ) -> None:
        self._entries = entries
        self._read = read
        self._source = source
        self._by_subject: dict[str, list[Artifact]] | None = None
        self._lock = anyio.Lock()

    async def of(self, digests: Iterable[str], selection: Selection) -> tuple[Artifact, ...]:
        """What refers to any of ``digests`` (and what refers to those, a few levels deep),
        of the types the selection takes; nothing when it takes no referrers."""
        if not selection.referrers:
            return ()
        by_subject = await self._index()
        found: dict[str, Artifact] = {}
        frontier = list(digests)
        for _ in range(REFERRER_DEPTH):
            following = []
            for digest in frontier:
                for artifact in by_subject.get(digest, ()):
                    if artifact.digest not in found and selection.takes_type(
                        artifact.artifact_type
                    ):
                        found[artifact.digest] = artifact
                        following.append(artifact.digest)
            frontier = following
        return tuple(found.values())

    async def attach(
        self, images: list[ResolvedImage], selection: Selection
    ) -> list[ResolvedImage]:
        """``images`` (of one name), each with the referrers of the name's documents."""
        if not selection.referrers or not images:
            return images
        from dataclasses import replace

        digests = {i.manifest_digest for i in images} | {p.digest for p in images[0].parents}
        digests |= {a.digest for i in images for a in i.artifacts}
        found = await self.of(digests, selection)
        if not found:
            return images
        return [replace(i, artifacts=i.artifacts + found) for i in images]

    async def _index(self) -> dict[str, list[Artifact]]:
        async with self._lock:
            if self._by_subject is None:
                self._by_subject = await self._build()
            return self._by_subject

    async def _build(self) -> dict[str, list[Artifact]]:
        by_subject: dict[str, list[Artifact]] = {}
        for entry in self._entries:
            if entry.media_type in INDEX_TYPES:
                continue  # an index is an image's (or a referrers tag's), never a referrer here
            annotations = entry.annotations
            subject = annotations.get(REFERRER_SUBJECT_ANNOTATION)
            tag = annotations.get(REFERRER_TAG_ANNOTATION)
            name = stored_name(annotations)
            if name is not None and tag is None:
                if cosign_subject(_tag_of(name)) is None:
                    continue  # a named image
                tag = _tag_of(name)
            subject = subject or (cosign_subject(tag) if tag else None)
            raw = await self._read(entry)
            _, doc = document_kind(raw, entry.media_type, f"manifest {entry.digest}")
            if subject is None and doc.get("subject") is None and is_image_manifest(doc):
                continue  # an untagged image
            artifact = artifact_of(
                Document(entry, raw), doc, self._source, subject=subject, tag=tag
            )
            if artifact.subject is not None:
                by_subject.setdefault(artifact.subject, []).append(artifact)
        return by_subject
