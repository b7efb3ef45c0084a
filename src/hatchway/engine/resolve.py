"""Names → images: resolve every name, then assemble the images to export.

Resolution asks the store about every name concurrently but reports failures in command-line
order, so the error a user sees for two bad names does not depend on timing.  Assembly is
pure: images in order of first mention, each once (keyed by image ID), each recorded tag once
(FORMATS.md §1, §4).
"""

from __future__ import annotations

from collections.abc import Sequence

from hatchway.concurrency import gather_in_order
from hatchway.formats import ExportImage
from hatchway.model import Platform
from hatchway.reference import ImageQuery, Reference
from hatchway.stores.base import ResolvedImage, Store


async def resolve_all(
    queries: Sequence[ImageQuery], store: Store, platform: Platform | None, *, jobs: int
) -> list[list[ResolvedImage]]:
    """Resolve each query; raise the error of the first query (in order) that failed."""
    return await gather_in_order(queries, lambda q: store.resolve(q, platform), limit=jobs)


def assemble(resolved: Sequence[Sequence[ResolvedImage]]) -> list[ExportImage]:
    """The images to export, in first-mention order, each with its recorded tags."""
    order: list[str] = []
    first: dict[str, ResolvedImage] = {}
    tags: dict[str, list[Reference]] = {}
    seen_tags: set[str] = set()
    for images in resolved:
        for image in images:
            if image.id not in first:
                first[image.id] = image
                order.append(image.id)
                tags[image.id] = []
            for ref in image.tags:
                key = ref.recorded_tag()
                if key not in seen_tags:
                    seen_tags.add(key)
                    tags[image.id].append(ref)
    return [ExportImage(first[i].config, first[i].layers, tuple(tags[i])) for i in order]
