"""Names → a copy plan: resolve every name, then assemble the images and names to copy.

Resolution asks the source about every name concurrently but reports failures in the order
the names were given, so the error a user sees for two bad names does not depend on timing.
Assembly is pure: images in order of first mention, each once (keyed by image ID, keeping the
source that described it first), each recorded tag once (docs/names.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from hatchway.concurrency import gather_in_order
from hatchway.limits import RESOLVE_CONCURRENCY
from hatchway.model import Platform
from hatchway.reference import ImageQuery, Reference
from hatchway.transports.base import CopyImage, CopyName, CopyPlan, ResolvedImage, Source


async def resolve_all(
    queries: Sequence[ImageQuery], source: Source, platform: Platform | None
) -> list[list[ResolvedImage]]:
    """Resolve each query; raise the error of the first query (in order) that failed."""
    return await gather_in_order(
        queries, lambda q: source.resolve(q, platform), limit=RESOLVE_CONCURRENCY
    )


def assemble(
    queries: Sequence[ImageQuery], resolved: Sequence[Sequence[ResolvedImage]]
) -> CopyPlan:
    """The images to copy (first-mention order, each once, each recorded tag once) and the
    names to record, in the order the names were given."""
    first: dict[str, ResolvedImage] = {}
    tags: dict[str, list[Reference]] = {}
    seen_tags: set[str] = set()
    names: list[CopyName] = []
    seen_names: set[tuple[str, str | None]] = set()

    def record(reference: Reference | None, image_id: str) -> None:
        key = (image_id, _name_key(reference))
        if key not in seen_names:
            seen_names.add(key)
            names.append(CopyName(reference, image_id))

    for query, images in zip(queries, resolved, strict=True):
        for image in images:
            if image.id not in first:
                first[image.id] = image
                tags[image.id] = []
            for ref in image.tags:
                if ref.recorded_tag() not in seen_tags:
                    seen_tags.add(ref.recorded_tag())
                    tags[image.id].append(ref)
                record(ref, image.id)
            if not image.tags:
                asked = query.reference
                by_digest = asked is not None and asked.digest is not None
                record(asked if by_digest else None, image.id)
    named = {n.image_id for n in names if n.reference is not None}
    return CopyPlan(
        tuple(CopyImage(first[i], tuple(tags[i])) for i in first),
        tuple(n for n in names if n.reference is not None or n.image_id not in named),
    )


def _name_key(reference: Reference | None) -> str | None:
    if reference is None:
        return None
    if reference.digest is not None:
        return f"{reference.name}@{reference.digest}"
    return reference.qualified_tag()
