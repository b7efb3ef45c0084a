"""The contracts between the copy engine and the transports.

A transport is a place images live — the local OCI image layout, a registry, an archive.  It
offers a **source** (which images does this name mean, and what are the bytes of this blob?)
and, where it makes sense, a **destination** (receive blobs, then manifests and names,
atomically).  The engine (``hatchway.engine``) moves images from any source to any
destination; it never knows which transport it talks to.

Sources
    :class:`Source` resolves a query to :class:`ResolvedImage`\\ s; each carries the
    :class:`BlobSource` that serves its blobs (a local store is its own blob source; a registry
    hands out one per repository, because it serves blobs per repository).

Capabilities
    Each source and destination *declares* what it can do (:class:`BlobCapabilities`,
    :class:`DestinationCapabilities`); the engine acts on the declarations and never probes
    for methods or looks inside wrappers.

Destinations
    :class:`Destination` declares the :class:`LayerForm` it keeps layers in, and opens a
    :class:`Receiver` for one copy.  The engine asks the receiver whether it already holds a
    layer, offers it a local file, or opens a :class:`LayerTarget` and writes the layer into it;
    at the end it calls :meth:`Receiver.commit`, which writes manifests, names or the archive.

Who verifies what, so that nothing is checked twice and nothing is trusted:

* A source verifies what it parses while resolving: every manifest, index and config it reads
  is checked against its descriptor's digest and size before it is believed.
* A source does **not** verify layer blobs: :meth:`BlobSource.open_blob` hands over raw bytes.
* The engine verifies every layer blob it moves — its digest, and its diffID when it
  decompresses — and calls :meth:`LayerTarget.commit` only after both checked out.  A
  destination therefore never keeps unverified bytes, with one exception it opts into:
  :meth:`Receiver.adopt_file` hands it a local file whose check it performs itself (an archive
  written to a temp file verifies such a layer while copying it, and any failure discards the
  whole file).

Sources and destinations are wrapped, not subclassed: a throttled source, a counting source or
a router that sends each name to the source of its transport all implement :class:`Source`
around another one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeVar, runtime_checkable

from hatchway.model import (
    Descriptor,
    ImageConfig,
    Layer,
    Manifest,
    Platform,
    parse_index,
    parse_json_object,
)
from hatchway.progress import ProgressCallback
from hatchway.reference import ImageQuery, Reference

R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class BlobOrigin:
    """Where a source reads its blobs from, when that is a registry repository: a destination
    in the same registry may mount them from there instead of copying them (``registry`` is
    the host as in a reference, ``host[:port]``)."""

    registry: str
    repository: str


@dataclass(frozen=True, slots=True)
class BlobCapabilities:
    """What a blob source can do — declared, never probed for (containers/image declares its
    sources' abilities the same way).  Wrappers forward their inner source's capabilities,
    changed where they change what it can do.

    ``concurrent``: blobs may be read several at a time (``False``: the engine reads one at a
    time, e.g. a source that is one sequential stream).  ``local_files``: :meth:`BlobSource.
    local_file` may name a file (``False``: it always returns ``None``, and the engine does not
    ask).  ``size_hints``: :meth:`BlobSource.size_hint` may know a layer's uncompressed size
    before it is read (``False``: it always returns ``None``).  ``origin``: the registry
    repository the blobs come from, for mounting (``None``: not a registry).
    """

    concurrent: bool = True
    local_files: bool = False
    size_hints: bool = False
    origin: BlobOrigin | None = None


@runtime_checkable
class BlobSource(Protocol):
    """Where the blobs of resolved images are read from (a store, one registry repository).

    Implementations must be safe to call concurrently (reads of several blobs at once only
    when ``capabilities.concurrent`` says so).
    """

    #: A short human name for messages, e.g. ``store /var/lib/hatchway/store``.
    description: str
    #: What this source can do (see :class:`BlobCapabilities`).
    capabilities: BlobCapabilities

    def open_blob(
        self, descriptor: Descriptor
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open a blob as an async iterator of byte chunks, unverified.

        The iterator is valid inside the context only; leaving the context (also early, on
        cancellation) closes it and releases the file or connection.

        Raises :class:`~hatchway.errors.BlobNotFound` or :class:`~hatchway.errors.StoreError`
        on entry or while iterating.  The caller verifies the digest.
        """
        ...

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        """Where the blob's bytes lie in a file on this machine, if the source keeps blobs in
        files (``capabilities.local_files``): a whole file (a store's blob) or a range of one
        (a member of an archive).

        A capability, not a promise that the bytes are intact: the engine reads them itself
        (in steps on worker threads instead of through :meth:`open_blob`) and still verifies
        them, and a destination that adopts them verifies them while using them.
        """
        ...

    def size_hint(self, descriptor: Descriptor) -> int | None:
        """What the blob is expected to inflate to, if the source knows before reading it
        (``capabilities.size_hints``; a registry's gzip trailer, read while the image
        resolved).  Never trusted: a hint only lets a destination plan ahead."""
        ...


@dataclass(frozen=True, slots=True)
class LocalBlob:
    """A blob's bytes in a local file: ``size`` bytes from ``offset`` of ``path``, or, when
    ``size`` is ``None``, everything from ``offset`` to the end of the file (a store's blob
    file, whose length is part of what is verified)."""

    path: str
    offset: int = 0
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """What a copy takes of each image a name resolves to.

    ``platforms`` are the platforms wanted from an image index (empty: the host's platform —
    and a single-platform image whatever its platform, as ``docker save`` takes it);
    ``all_platforms`` takes every child of an index instead — only those the source holds,
    with ``held_only`` (a partial index, as an archive of some platforms keeps it).
    ``referrers`` takes the artifacts that refer to each image too (signatures, SBOMs,
    attestations), only those whose type is in ``artifact_types`` when that is not empty.
    """

    platforms: tuple[Platform, ...] = ()
    all_platforms: bool = False
    referrers: bool = False
    artifact_types: tuple[str, ...] = ()
    held_only: bool = False

    def __post_init__(self) -> None:
        if self.all_platforms and self.platforms:
            raise ValueError("a selection takes all platforms or a list of them, not both")

    @classmethod
    def of(cls, platform: Platform | None) -> Selection:
        """The selection of one platform (``None``: the default, the host's)."""
        return cls(() if platform is None else (platform,))

    @property
    def explicit(self) -> bool:
        """Whether platforms were asked for (a single-platform image must then match)."""
        return self.all_platforms or bool(self.platforms)

    def wanted(self) -> tuple[Platform, ...]:
        """The platforms asked for (the host's by default); empty for every platform."""
        if self.all_platforms:
            return ()
        return self.platforms or (Platform.host(),)

    def takes_type(self, artifact_type: str | None) -> bool:
        """Whether a referrer of ``artifact_type`` comes along."""
        return self.referrers and (not self.artifact_types or artifact_type in self.artifact_types)

    def __str__(self) -> str:
        if self.all_platforms:
            return "all"
        return ",".join(str(p) for p in self.wanted())


@dataclass(frozen=True, slots=True)
class Document:
    """A manifest or index exactly as its source holds it: the descriptor and its bytes,
    verified against it."""

    descriptor: Descriptor
    raw: bytes

    @property
    def digest(self) -> str:
        return self.descriptor.digest


@dataclass(frozen=True, slots=True)
class Artifact:
    """A manifest carried along exactly as it is, which is not an image to run: a referrer
    (a signature, an SBOM, an attestation) or an index's child that is no image (BuildKit's
    attestation manifests).  Its blobs (``blobs``: the config and the layers) are verified by
    digest and size only, as any blob; nothing in them is interpreted.

    ``subject`` is the digest of the manifest or index it refers to (its ``subject`` field,
    the digest a cosign tag names, or BuildKit's reference annotation); ``tag`` the tag it
    lives under in its repository, when it has one (cosign's ``sha256-<hex>.sig``);
    ``artifact_type`` its type (``artifactType``, else its config's media type).
    """

    document: Document
    blobs: tuple[Descriptor, ...]
    source: BlobSource = field(compare=False, repr=False)
    subject: str | None = None
    tag: str | None = None
    artifact_type: str | None = None

    @property
    def digest(self) -> str:
        return self.document.digest


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """One image a name resolved to, with the tags that name records for it.

    ``descriptor`` describes the platform-specific manifest (its digest is the ``repo@digest``
    of a single image) and ``manifest_raw`` holds its bytes, verified against it.  ``tags`` is
    empty when the name was an ID or a digest reference.  ``source`` serves the image's blobs.

    ``parents`` are the image indexes the name led through to this manifest, exactly as
    stored: the one the name points at first, down to this manifest's own parent (empty when
    the name points at this manifest).  A name that resolves to several platforms of one index
    gives one image per platform, each with the same parents and tags: the tags name the
    index (:attr:`target`).  ``artifacts`` are manifests carried with the image that are no
    image to run (see :class:`Artifact`).
    """

    descriptor: Descriptor
    manifest_raw: bytes
    manifest: Manifest
    config: ImageConfig
    layers: tuple[Layer, ...]
    source: BlobSource = field(compare=False, repr=False)
    tags: tuple[Reference, ...] = ()
    parents: tuple[Document, ...] = ()
    artifacts: tuple[Artifact, ...] = ()

    @property
    def id(self) -> str:
        """The image ID: the config digest."""
        return self.config.id

    @property
    def manifest_digest(self) -> str:
        return self.descriptor.digest

    @property
    def target(self) -> Descriptor:
        """What the image's name points at: the outermost index, or the manifest itself."""
        return self.parents[0].descriptor if self.parents else self.descriptor

    @property
    def document(self) -> Document:
        """The image's own manifest, as a :class:`Document`."""
        return Document(self.descriptor, self.manifest_raw)


@runtime_checkable
class Source(Protocol):
    """Where images come from: resolves names.  Must be safe to call concurrently."""

    #: A short human name for messages, e.g. ``store /var/lib/hatchway/store``.
    description: str

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        """The images ``query`` names, in a stable order (each image once).

        ``selection`` says which platforms of a multi-platform index are taken (by default the
        host's, and a single-platform image whatever its platform) and which referrers come
        along (:class:`Selection`).

        Raises :class:`~hatchway.errors.NoSuchImage`,
        :class:`~hatchway.errors.AmbiguousReference`,
        :class:`~hatchway.errors.PlatformNotFound`,
        :class:`~hatchway.errors.DigestMismatch` (a manifest or config that does not match its
        digest) and :class:`~hatchway.errors.StoreError` (unreadable or malformed source).
        """
        ...

    async def aclose(self) -> None:
        """Release connections and caches.  Idempotent."""
        ...


# -- what the engine hands a destination ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopyImage:
    """One image a copy moves — the first resolution of its manifest — with every tag recorded
    for it, each once, in the order the names were given (a tag that names an index is
    recorded for one image under it: the host's platform if it is carried, else the first
    carried).  Its layers come from ``image.source``.
    """

    image: ResolvedImage
    tags: tuple[Reference, ...] = ()

    @property
    def id(self) -> str:
        return self.image.id


@dataclass(frozen=True, slots=True)
class CopyName:
    """One name a copy records, in the order the names were given: a tag, a digest
    reference (``repo@sha256:...``), or ``None`` for an image named only by its ID.

    ``target`` is what the name points at — an index or a manifest, whose bytes the copy
    carries as they are — and ``image_id`` the image its tag is recorded for (see
    :class:`CopyImage`).
    """

    reference: Reference | None
    image_id: str
    target: Descriptor


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """The images of one copy (first-mention order, each once) and the names it records.

    ``documents`` are the image indexes the names lead through (each once, outermost first:
    what a tag names, then the indexes inside it), carried exactly as they are; ``artifacts``
    the manifests carried along that are no image to run (each once).  :meth:`blobs` lists
    every blob the engine moves: the images' layers, then the artifacts' blobs.

    ``local_files`` holds, by blob digest, where a layer's blob lies in a local file when its
    source said so (asked once per layer, before anything moves; absent: not a local file):
    the engine reads those files itself, and a destination may use them to plan ahead.
    """

    images: tuple[CopyImage, ...]
    names: tuple[CopyName, ...]
    documents: tuple[Document, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    local_files: Mapping[str, LocalBlob] = field(default_factory=dict)

    def blobs(self) -> Iterator[tuple[Layer, BlobSource]]:
        """Every blob to move with the source that serves it, images' layers first (a blob
        needed twice is listed twice: the engine moves each once)."""
        for image in self.images:
            for layer in image.image.layers:
                yield layer, image.image.source
        for artifact in self.artifacts:
            for blob in artifact.blobs:
                yield Layer.of_blob(blob), artifact.source

    def referrers(self) -> tuple[Artifact, ...]:
        """The artifacts no index of the plan lists (referrers, which a layout keeps as
        entries of their own; an index's children are reached through the index)."""
        listed: set[str] = set()
        for document in self.documents:
            doc = parse_json_object(document.raw, f"index {document.digest}")
            listed.update(child.digest for child in parse_index(doc, f"index {document.digest}"))
        return tuple(a for a in self.artifacts if a.digest not in listed)


class LayerForm(Enum):
    """The form a destination keeps layers in, which decides what the engine verifies."""

    #: As the source stores it (compressed or not), verified by its blob digest: a store or a
    #: registry.  Layers are keyed by blob digest.
    STORED = "stored"
    #: Uncompressed, verified by blob digest and diffID: an archive.  Layers are keyed by
    #: diffID, so the same content stored twice (gzip here, zstd there) moves once.
    UNCOMPRESSED = "uncompressed"

    def key(self, layer: Layer) -> str:
        """The identity under which a layer moves exactly once."""
        return layer.diff_id if self is LayerForm.UNCOMPRESSED else layer.blob.digest


@dataclass(frozen=True, slots=True)
class CopyContext:
    """What a destination may use while receiving: the ``jobs`` bound (at most that many
    blobs move at once — also while it writes its output) and the progress callback."""

    jobs: int
    progress: ProgressCallback


class LayerTarget(Protocol):
    """Where the bytes of one layer go while the engine moves it."""

    def write(self, data: bytes | memoryview) -> object:
        """Append bytes (in the destination's :class:`LayerForm`).  Called from worker
        threads, one call at a time; raises :class:`~hatchway.errors.OutputError`."""
        ...

    async def commit(self, size: int) -> None:
        """Every byte (``size`` in all) was written and verified: keep the layer."""
        ...

    async def discard(self) -> None:
        """The move failed or was cancelled: keep nothing.  Never raises; runs shielded."""
        ...


class Receiver(Protocol[R_co]):
    """One copy's way into a destination, from the first layer to :meth:`commit`.

    The engine calls :meth:`has_layer` (if the destination ``holds_layers``), :meth:`adopt_file`
    (if it ``adopts_local_files``) and :meth:`open_layer` concurrently (for different layers)
    and each at most once per layer key; :meth:`commit` once, after
    every layer is in place.  Leaving the :meth:`Destination.receive` context without a
    commit (an error, a cancellation) must leave the destination as it was — apart from
    verified, content-addressed blobs a store may keep.
    """

    async def has_layer(self, layer: Layer) -> bool:
        """Whether the destination already holds this layer intact (nothing to move)."""
        ...

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        """Offer ``layer``'s blob as the local, unverified bytes ``local`` (from the source
        named ``source``).  ``True``: the destination took it and will verify it itself, before
        anything it produces can be seen; ``False``: the engine moves it as usual."""
        ...

    async def open_layer(self, layer: Layer) -> LayerTarget:
        """Where the engine writes ``layer`` (in the destination's :class:`LayerForm`)."""
        ...

    async def commit(self) -> R_co:
        """Every layer is in place: write what makes the copy visible (manifests, names, the
        archive) and return the destination's result."""
        ...


@dataclass(frozen=True, slots=True)
class DestinationCapabilities:
    """What a destination does with layers — declared, so that the engine acts on it instead of
    inferring it from the destination's kind.

    ``layer_form``: the form layers are kept in (what the engine decodes to and verifies).
    ``holds_layers``: :meth:`Receiver.has_layer` may answer ``True`` (a store, a registry;
    ``False``: every layer moves and the engine does not ask).  ``adopts_local_files``:
    :meth:`Receiver.adopt_file` may take a local file (``False``: never offered).
    ``batches_small_layers``: a small local layer's move is local CPU work only (no I/O of the
    destination's own per layer, as into an archive's staging), so the engine moves such
    layers in batches.  ``writes_in_place``: layers can be written straight to their final
    place when their sizes are known in advance, so size hints are worth gathering.
    """

    layer_form: LayerForm
    holds_layers: bool = False
    adopts_local_files: bool = False
    batches_small_layers: bool = False
    writes_in_place: bool = False


class Destination(Protocol[R_co]):
    """Where a copy puts images: an archive, the local store, a registry."""

    #: A short human name for messages.
    description: str
    #: What the destination does with layers (see :class:`DestinationCapabilities`).
    capabilities: DestinationCapabilities

    def receive(
        self, plan: CopyPlan, context: CopyContext
    ) -> AbstractAsyncContextManager[Receiver[R_co]]:
        """Open a :class:`Receiver` for copying ``plan``; leaving the context releases what
        the receiver holds (a staging directory, a temp file), however the copy ended."""
        ...
