"""Names → a copy plan: resolve every name, then assemble the images and names to copy.

Resolution asks the source about every name concurrently but reports failures in the order
the names were given, so the error a user sees for two bad names does not depend on timing.
Assembly is pure: images in order of first mention, each once (keyed by manifest digest,
keeping the source that described it first), the indexes and artifacts they come with each
once, and each recorded tag once (docs/names.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from hatchway.concurrency import gather_in_order
from hatchway.limits import RESOLVE_CONCURRENCY
from hatchway.model import Platform
from hatchway.reference import ImageQuery, Reference
from hatchway.transports.base import (
    Artifact,
    CopyImage,
    CopyName,
    CopyPlan,
    Document,
    ResolvedImage,
    Selection,
    Source,
)


async def resolve_all(
    queries: Sequence[ImageQuery], source: Source, selection: Selection
) -> list[list[ResolvedImage]]:
    """Resolve each query; raise the error of the first query (in order) that failed."""
    return await gather_in_order(
        queries, lambda q: source.resolve(q, selection), limit=RESOLVE_CONCURRENCY
    )


def assemble(
    queries: Sequence[ImageQuery], resolved: Sequence[Sequence[ResolvedImage]]
) -> CopyPlan:
    """The images to copy (first-mention order, each once, each recorded tag once), the
    indexes and artifacts they come with, and the names to record, in the order given.

    A tag names what its name resolved to — an index, or a manifest — and is recorded (for
    the formats that list tags per image) for one image under it: the host's platform if it is
    among those carried, else the first.
    """
    images: dict[str, ResolvedImage] = {}
    tags: dict[str, list[Reference]] = {}
    seen_tags: set[str] = set()
    names: list[CopyName] = []
    seen_names: set[tuple[str, str | None]] = set()
    documents: dict[str, Document] = {}
    artifacts: dict[str, Artifact] = {}

    def record(reference: Reference | None, image: ResolvedImage) -> None:
        key = (image.target.digest, _name_key(reference))
        if key not in seen_names:
            seen_names.add(key)
            names.append(CopyName(reference, image.id, image.target))

    for query, found in zip(queries, resolved, strict=True):
        for image in found:
            if image.manifest_digest not in images:
                images[image.manifest_digest] = image
                tags[image.manifest_digest] = []
            for document in image.parents:
                documents.setdefault(document.digest, document)
            for artifact in image.artifacts:
                artifacts.setdefault(artifact.digest, artifact)
        for image, image_tags in _representatives(found):
            for ref in image_tags:
                if ref.recorded_tag() not in seen_tags:
                    seen_tags.add(ref.recorded_tag())
                    tags[image.manifest_digest].append(ref)
                record(ref, image)
            if not image_tags:
                asked = query.reference
                by_digest = asked is not None and asked.digest is not None
                record(asked if by_digest else None, image)
    named = {n.target.digest for n in names if n.reference is not None}
    return CopyPlan(
        tuple(CopyImage(images[d], tuple(tags[d])) for d in images),
        tuple(n for n in names if n.reference is not None or n.target.digest not in named),
        tuple(documents.values()),
        tuple(artifacts.values()),
    )


def _representatives(
    found: Sequence[ResolvedImage],
) -> list[tuple[ResolvedImage, tuple[Reference, ...]]]:
    """One image per target a name resolved to — the host's platform if it is there, else
    the first — with the tags of every image under that target (a name that resolves to three
    platforms of one index records its tags once)."""
    by_target: dict[str, list[ResolvedImage]] = {}
    for image in found:
        by_target.setdefault(image.target.digest, []).append(image)
    host = Platform.host()
    chosen = []
    for group in by_target.values():
        native = [i for i in group if host.matches(i.descriptor.platform or i.config.platform)]
        tags = tuple(dict.fromkeys(t for i in group for t in i.tags))
        chosen.append(((native or group)[0], tags))
    return chosen


def _name_key(reference: Reference | None) -> str | None:
    if reference is None:
        return None
    if reference.digest is not None:
        return f"{reference.name}@{reference.digest}"
    return reference.qualified_tag()
