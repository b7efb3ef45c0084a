"""From a top-level manifest or index to the verified images a selection takes: the walk every
source shares.

A source fetches documents its own way (files, HTTP); what it does with them is the same
everywhere: an index lists manifests (and maybe indexes) per platform, a manifest names its
config, the config's diffIDs pair with the manifest's layers.  The selection
(:class:`~hatchway.transports.base.Selection`) says which children of an index are taken: the
host's platform by default, a list of platforms, or all of them — every child then, images or
not, so that the index can be carried byte for byte.  A child that is no image (BuildKit's
attestation manifests, with their in-toto layers) is carried as an
:class:`~hatchway.transports.base.Artifact`.  Sources pass in readers that return bytes already
checked against their descriptors; nothing here is rewritten.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from hatchway.errors import BlobNotFound, MalformedContent, PlatformNotFound
from hatchway.limits import MAX_INDEX_DEPTH
from hatchway.model import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    Manifest,
    Platform,
    artifact_type_of,
    document_kind,
    image_layers,
    is_image_manifest,
    parse_index,
    parse_manifest,
    refers_to,
    select_platform,
)
from hatchway.transports.base import Artifact, BlobSource, Document, ResolvedImage, Selection

ReadDocument = Callable[[Descriptor], Awaitable[bytes]]
ReadConfig = Callable[[Descriptor], Awaitable[ImageConfig]]


async def load_images(
    top: Descriptor,
    top_raw: bytes,
    *,
    name: str,
    selection: Selection,
    source: BlobSource,
    read_manifest: ReadDocument,
    read_config: ReadConfig,
    manifest_read: Callable[[Manifest], None] | None = None,
) -> list[ResolvedImage]:
    """Walk from ``top`` (with its verified bytes) to the images ``selection`` takes, in a
    stable order (each manifest once), their blobs served by ``source``.

    A single manifest is one image, checked against the platforms asked for (when asked).
    Raises :class:`~hatchway.errors.PlatformNotFound` (naming the platforms the index has),
    :class:`~hatchway.errors.UnsupportedMediaType` and
    :class:`~hatchway.errors.MalformedContent` (which the source re-raises as its own).
    ``manifest_read`` is told each platform manifest before its config is read (a source may
    start on the layers meanwhile).
    """
    walk = _Walk(name, selection, source, read_manifest, read_config, manifest_read)
    media_type, doc = document_kind(top_raw, top.media_type, f"manifest {top.digest}")
    if media_type not in INDEX_TYPES:
        image = await walk.image(Document(top, top_raw), media_type, doc, ())
        asked = selection.platforms
        if asked and not any(p.matches(image.config.platform) for p in asked):
            raise PlatformNotFound(name, str(selection), [str(image.config.platform)])
        return [image]
    wanted = None if selection.all_platforms else selection.wanted()
    await walk.index(Document(top, top_raw), doc, (), wanted)
    for platform in wanted or ():
        if not any(platform.matches(_platform(i)) for i in walk.images.values()):
            raise PlatformNotFound(name, str(platform), walk.available)
    artifacts = tuple(walk.artifacts.values())
    return [replace(image, artifacts=artifacts) for image in walk.images.values()]


@dataclass
class _Walk:
    name: str
    selection: Selection
    source: BlobSource
    read_manifest: ReadDocument
    read_config: ReadConfig
    manifest_read: Callable[[Manifest], None] | None
    images: dict[str, ResolvedImage] = field(default_factory=dict)
    #: Children that are no image, by digest.
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    #: The platforms the indexes walked list (for the error that says what there is).
    available: list[str] = field(default_factory=list)

    async def index(
        self,
        document: Document,
        doc: dict[str, object],
        parents: tuple[Document, ...],
        wanted: tuple[Platform, ...] | None,
    ) -> None:
        """Take what ``wanted`` asks of this index (``None``: every child)."""
        if len(parents) >= MAX_INDEX_DEPTH:
            raise MalformedContent(
                f"index {document.digest}: indexes nested over {MAX_INDEX_DEPTH} deep"
            )
        children = parse_index(doc, f"index {document.digest}")
        here = (*parents, document)
        for c in children:
            if c.platform is not None and c.media_type not in INDEX_TYPES:
                self.available.append(str(c.platform))
        if wanted is None:
            for child in children:
                await self.child(child, here, None)
            return
        before = set(self.images)
        for child, platforms in _chosen(children, wanted):
            await self.child(child, here, platforms)
        if self.selection.referrers:
            carried = set(self.images) - before
            for child in children:  # what refers to a carried platform: BuildKit attestations
                if child.digest not in carried and refers_to(child) in carried:
                    await self.child(child, here, None)

    async def child(
        self, child: Descriptor, parents: tuple[Document, ...], wanted: tuple[Platform, ...] | None
    ) -> None:
        if child.digest in self.images or child.digest in self.artifacts:
            return
        try:
            raw = await self.read_manifest(child)
        except BlobNotFound:
            if self.selection.held_only:
                return  # a platform the source does not hold: the index is carried partial
            raise
        media_type, doc = document_kind(raw, child.media_type, f"manifest {child.digest}")
        document = Document(child, raw)
        if media_type in INDEX_TYPES:
            await self.index(document, doc, parents, wanted)
        elif is_image_manifest(doc):
            await self.image(document, media_type, doc, parents)
        else:
            self.artifacts[child.digest] = artifact_of(
                document, doc, self.source, subject=refers_to(child)
            )

    async def image(
        self,
        document: Document,
        media_type: str,
        doc: dict[str, object],
        parents: tuple[Document, ...],
    ) -> ResolvedImage:
        descriptor = document.descriptor
        manifest = parse_manifest(doc, media_type, f"manifest {descriptor.digest}")
        if self.manifest_read is not None:
            self.manifest_read(manifest)
        config = await self.read_config(manifest.config)
        layers = image_layers(manifest, config, f"manifest {descriptor.digest}")
        image = ResolvedImage(
            descriptor, document.raw, manifest, config, layers, self.source, parents=parents
        )
        self.images[descriptor.digest] = image
        return image


def _chosen(
    children: Sequence[Descriptor], wanted: tuple[Platform, ...]
) -> list[tuple[Descriptor, tuple[Platform, ...]]]:
    """For each platform wanted, the child that has it: its manifest, else an index listed
    for it (or for no platform), where the walk looks further — each child once, with the
    platforms it is looked into for.  A platform found nowhere is left out (the caller says
    which are missing once the whole walk is done)."""
    chosen: dict[str, tuple[Descriptor, tuple[Platform, ...]]] = {}
    for platform in wanted:
        found = select_platform(children, platform) or _nested_index(children, platform)
        if found is None:
            continue
        prior = chosen.get(found.digest)
        chosen[found.digest] = (found, (*prior[1], platform) if prior else (platform,))
    return list(chosen.values())


def artifact_of(
    document: Document,
    doc: dict[str, object],
    source: BlobSource,
    *,
    subject: str | None = None,
    tag: str | None = None,
) -> Artifact:
    """The manifest ``document`` (parsed: ``doc``) as an artifact: its config and layers as
    blobs.  ``subject`` is what it refers to when its own ``subject`` field does not say."""
    what = f"manifest {document.digest}"
    blobs: list[Descriptor] = []
    config = doc.get("config")
    if config is not None:
        blobs.append(Descriptor.from_json(config, f"{what} config"))
    layers = doc.get("layers")
    if layers is not None and not isinstance(layers, list):
        raise MalformedContent(f"{what}: layers is not a list")
    blobs += [Descriptor.from_json(d, f"{what} layer") for d in layers or ()]
    own = doc.get("subject")
    if own is not None:
        subject = Descriptor.from_json(own, f"{what} subject").digest
    return Artifact(
        document,
        tuple(blobs),
        source,
        subject=subject,
        tag=tag,
        artifact_type=artifact_type_of(doc),
    )


def _platform(image: ResolvedImage) -> Platform:
    """The platform an image was taken for: as its index lists it, else as its config says."""
    return image.descriptor.platform or image.config.platform


def _nested_index(children: Sequence[Descriptor], wanted: Platform) -> Descriptor | None:
    for child in children:
        if child.media_type in INDEX_TYPES and (
            child.platform is None or wanted.matches(child.platform)
        ):
            return child
    return None
