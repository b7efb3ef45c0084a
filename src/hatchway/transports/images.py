"""From a top-level manifest or index to one verified image: the walk every store shares.

A source fetches documents its own way (files, HTTP); what it does with them is the same
everywhere: an index picks the manifest for the platform, the manifest names the config, the
config's diffIDs pair with the manifest's layers.  Sources pass in readers that return bytes
already checked against their descriptors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from hatchway.errors import MalformedContent, PlatformNotFound
from hatchway.limits import MAX_INDEX_DEPTH
from hatchway.model import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    Layer,
    Manifest,
    Platform,
    document_kind,
    image_layers,
    parse_index,
    parse_manifest,
    select_platform,
)

ReadDocument = Callable[[Descriptor], Awaitable[bytes]]
ReadConfig = Callable[[Descriptor], Awaitable[ImageConfig]]


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """The platform manifest (its descriptor and raw bytes), its config and its layers."""

    descriptor: Descriptor
    raw: bytes
    manifest: Manifest
    config: ImageConfig
    layers: tuple[Layer, ...]


async def load_image(
    top: Descriptor,
    top_raw: bytes,
    *,
    name: str,
    platform: Platform | None,
    read_manifest: ReadDocument,
    read_config: ReadConfig,
    manifest_read: Callable[[Manifest], None] | None = None,
) -> LoadedImage:
    """Walk from ``top`` (with its verified bytes) to one image.

    An index yields its manifest for ``platform`` (default: the host's); a single manifest is
    checked against ``platform`` only when one was asked for.  Raises
    :class:`~hatchway.errors.PlatformNotFound`, :class:`~hatchway.errors.UnsupportedMediaType`
    and :class:`~hatchway.errors.MalformedContent` (which the source re-raises as its own).
    ``manifest_read`` is told the platform manifest before its config is read (a source may
    start on the layers meanwhile).
    """
    descriptor, raw = top, top_raw
    media_type, doc = document_kind(raw, descriptor.media_type, f"manifest {descriptor.digest}")
    wanted = platform or Platform.host()
    picked = False  # chosen from an index for ``wanted``, rather than named directly
    for _ in range(MAX_INDEX_DEPTH + 1):
        if media_type not in INDEX_TYPES:
            break
        children = parse_index(doc, f"index {descriptor.digest}")
        # A manifest for the platform, else an index listed for it (or for none): the spec
        # lets an index list indexes, and verify reads them so.
        chosen = select_platform(children, wanted) or _nested_index(children, wanted)
        if chosen is None:
            available = [
                str(c.platform)
                for c in children
                if c.platform is not None and c.media_type not in INDEX_TYPES
            ]
            raise PlatformNotFound(name, str(wanted), available)
        descriptor, raw = chosen, await read_manifest(chosen)
        media_type, doc = document_kind(raw, chosen.media_type, f"manifest {chosen.digest}")
        picked = True
    else:
        raise MalformedContent(f"index {top.digest}: indexes nested over {MAX_INDEX_DEPTH} deep")
    manifest = parse_manifest(doc, media_type, f"manifest {descriptor.digest}")
    if manifest_read is not None:
        manifest_read(manifest)
    config = await read_config(manifest.config)
    # Named directly (a store entry may carry the platform `pull` picked it for, which says
    # nothing of what was asked now): its config must match what was asked.
    if platform is not None and not picked and not platform.matches(config.platform):
        raise PlatformNotFound(name, str(platform), [str(config.platform)])
    layers = image_layers(manifest, config, f"manifest {descriptor.digest}")
    return LoadedImage(descriptor, raw, manifest, config, layers)


def _nested_index(children: Sequence[Descriptor], wanted: Platform) -> Descriptor | None:
    for child in children:
        if child.media_type in INDEX_TYPES and (
            child.platform is None or wanted.matches(child.platform)
        ):
            return child
    return None
