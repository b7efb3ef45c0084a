"""Reading a local OCI image layout: the store as a source.

Layout: ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>`` (OCI image-spec
image-layout.md).  Entries are named by the naming rule of :mod:`.spec`.  The image ID is the
config digest; ``repo@sha256:...`` names a manifest digest (the index entry's, or the platform
manifest's inside it).

Every file is opened with :func:`hatchway.files.open_regular`: an entry that is not a regular
file (a FIFO, a device behind a symlink) is refused at once instead of blocking, and documents
are refused above ``MAX_DOCUMENT_SIZE`` before they are read.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from hatchway.concurrency import BatchedCalls
from hatchway.errors import (
    AmbiguousReference,
    BlobNotFound,
    DigestMismatch,
    HatchwayError,
    MalformedContent,
    NoSuchImage,
    PlatformNotFound,
    StoreError,
)
from hatchway.files import RegularFileReader, read_regular
from hatchway.limits import CHUNK_SIZE, MAX_DOCUMENT_SIZE
from hatchway.model import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    Platform,
    parse_config,
    parse_index,
    parse_json_object,
    sha256_digest,
)
from hatchway.oci_layout import (
    INDEX_NAME,
    LAYOUT_VERSION,
    entry_reference,
    stored_name,
)
from hatchway.reference import ImageQuery, Reference
from hatchway.transports.base import BlobCapabilities, LocalBlob, ResolvedImage, Selection
from hatchway.transports.images import load_images
from hatchway.transports.referrers import LayoutReferrers, is_referrer


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One descriptor of ``index.json`` and the tagged name it resolved to (if any)."""

    descriptor: Descriptor
    name: Reference | None


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """A row of ``hatchway images``: what one index entry resolved to on one platform."""

    name: Reference | None
    annotation: str | None
    image: ResolvedImage | None
    error: str | None

    @property
    def size(self) -> int:
        """Bytes the image occupies in the store: its config and (compressed) layer blobs."""
        if self.image is None:
            return 0
        layers = {layer.blob.digest: layer.blob.size for layer in self.image.layers}
        return self.image.manifest.config.size + sum(layers.values())


class _Index:
    """The entries of ``index.json`` — the images' (``entries``), with lookups by name that do
    not scan them all, and the referrers' (``referrers``)."""

    def __init__(self, entries: list[IndexEntry], referrers: LayoutReferrers) -> None:
        self.entries = [e for e in entries if not is_referrer(e.descriptor)]
        self.referrers = referrers
        self.by_name: dict[Reference, IndexEntry] = {}
        self.by_repository: dict[Reference, list[IndexEntry]] = {}
        for entry in self.entries:
            if entry.name is not None:
                self.by_name.setdefault(entry.name, entry)  # the first entry of a name wins
                self.by_repository.setdefault(entry.name.repository(), []).append(entry)


class OCILayoutStore:
    """Images in an OCI image layout directory.  See the module docstring for naming."""

    #: Blobs are files of the layout, read concurrently.
    capabilities = BlobCapabilities(local_files=True)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.description = f"store {self.root}"
        self._entries: _Index | None = None
        self._entries_lock = anyio.Lock()
        self._resolved: dict[tuple[str, Selection], list[ResolvedImage]] = {}
        # Resolving a thousand images reads two thousand small documents: a few worker
        # calls read (and hash) them all, instead of one thread hand-off each.
        self._documents: BatchedCalls[Path, tuple[bytes, str]] = BatchedCalls(_read_hashed)

    # -- the Source protocol -----------------------------------------------------------

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        index = await self._index()
        ref = query.reference
        if ref is not None and ref.registry:
            raise StoreError(
                self.description, f"{query.text}: registry names need a registry store"
            )
        if ref is not None and ref.digest is not None:
            return await self._by_digest(query.text, ref, index, selection)
        if ref is not None and ref.tag is not None:
            entry = index.by_name.get(ref)
            if entry is None:
                raise NoSuchImage(query.text)
            return await self._images(entry.descriptor, query.text, selection, (ref,))
        if ref is not None:
            tagged = index.by_repository.get(ref)
            if tagged:
                return await self._group_by_image(query.text, tagged, selection)
        if query.id_prefix is not None:
            return [await self._by_id(query, index.entries, selection)]
        raise NoSuchImage(query.text)

    @asynccontextmanager
    async def open_blob(self, descriptor: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self._blob_path(descriptor.digest)
        with self._translate(descriptor.digest):
            reader = await anyio.to_thread.run_sync(RegularFileReader, path)
        chunks = self._chunks(reader, descriptor.digest)
        try:
            yield chunks
        finally:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
                await anyio.to_thread.run_sync(reader.close)

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        return LocalBlob(str(self._blob_path(descriptor.digest)))

    def size_hint(self, descriptor: Descriptor) -> int | None:
        return None

    async def aclose(self) -> None:
        self._entries = None
        self._resolved.clear()

    # -- listing -------------------------------------------------------------------------

    async def list_images(self, platform: Platform | None) -> list[ImageSummary]:
        """Every index entry and what it resolves to; unreadable entries carry their error."""
        rows = []
        selection = Selection.of(platform)
        for entry in (await self._index()).entries:
            annotation = stored_name(entry.descriptor.annotations)
            try:
                [image, *_] = await self._images(
                    entry.descriptor, annotation or entry.descriptor.digest, selection, ()
                )
            except HatchwayError as exc:
                rows.append(ImageSummary(entry.name, annotation, None, str(exc)))
            else:
                rows.append(ImageSummary(entry.name, annotation, image, None))
        return rows

    # -- resolution helpers ------------------------------------------------------------

    async def _group_by_image(
        self, text: str, entries: list[IndexEntry], selection: Selection
    ) -> list[ResolvedImage]:
        """Every tag of a repository: each image once (by what its tags name), with all of
        its tags."""
        images: dict[tuple[str, str], ResolvedImage] = {}
        for entry in entries:
            assert entry.name is not None
            for image in await self._images(entry.descriptor, str(entry.name), selection, ()):
                key = (image.target.digest, image.manifest_digest)
                prior = images.get(key)
                tags = (prior.tags if prior else ()) + (entry.name,)
                images[key] = replace(image, tags=tags)
        return list(images.values())

    async def _by_digest(
        self, text: str, ref: Reference, index: _Index, selection: Selection
    ) -> list[ResolvedImage]:
        """``repo@digest``: an index entry's digest, or the digest of any platform's manifest
        inside an index (that manifest is then saved, whatever ``--platform`` says)."""
        assert ref.digest is not None
        for entry in index.by_repository.get(ref.repository(), ()):
            if entry.descriptor.digest == ref.digest:
                return await self._images(entry.descriptor, text, selection, ())
            child = await self._child(entry.descriptor, ref.digest)
            if child is not None:
                platformless = replace(selection, platforms=(), all_platforms=False)
                return await self._images(child, text, platformless, ())
        raise NoSuchImage(text)

    async def _child(self, descriptor: Descriptor, digest: str) -> Descriptor | None:
        """The manifest descriptor with ``digest`` inside the index ``descriptor``, if any."""
        if descriptor.media_type not in INDEX_TYPES:
            return None
        raw = await self._read_document(descriptor)
        with self._malformed():
            children = parse_index(parse_json_object(raw, f"index {descriptor.digest}"), "index")
        return next((c for c in children if c.digest == digest), None)

    async def _by_id(
        self, query: ImageQuery, entries: list[IndexEntry], selection: Selection
    ) -> ResolvedImage:
        """The one image whose ID starts with the prefix.  Entries that cannot be read are
        skipped (an unrelated broken image must not hide this one); if nothing matched, the
        answer is still "No such image", with a note of the entries that could not be read
        (the image may be one of them, or not: the note says why none was found)."""
        assert query.id_prefix is not None
        matches: dict[str, ResolvedImage] = {}
        broken: list[HatchwayError] = []
        for entry in entries:
            try:
                images = await self._images(entry.descriptor, query.text, selection, ())
            except PlatformNotFound:
                continue
            except HatchwayError as exc:
                broken.append(exc)
                continue
            for image in images:
                if image.id.removeprefix("sha256:").startswith(query.id_prefix):
                    matches.setdefault(image.id, image)
        if len(matches) > 1:
            raise AmbiguousReference(query.text, sorted(m.removeprefix("sha256:") for m in matches))
        if not matches:
            raise NoSuchImage(query.text, _unreadable_note(broken))
        return next(iter(matches.values()))

    async def _images(
        self,
        descriptor: Descriptor,
        text: str,
        selection: Selection,
        tags: tuple[Reference, ...],
    ) -> list[ResolvedImage]:
        key = (descriptor.digest, selection)
        images = self._resolved.get(key)
        if images is None:
            images = await self._load_images(descriptor, text, selection)
            self._resolved[key] = images
        return [replace(image, tags=tags) for image in images] if tags else images

    async def _load_images(
        self, descriptor: Descriptor, text: str, selection: Selection
    ) -> list[ResolvedImage]:
        raw = await self._read_document(descriptor)

        async def read_config(config: Descriptor) -> ImageConfig:
            return parse_config(await self._read_document(config), config.digest)

        with self._malformed():
            images = await load_images(
                descriptor,
                raw,
                name=text,
                selection=selection,
                source=self,
                read_manifest=self._read_document,
                read_config=read_config,
            )
            return await (await self._index()).referrers.attach(images, selection)

    async def _index(self) -> _Index:
        async with self._entries_lock:
            if self._entries is None:
                entries = await self._load_index()
                referrers = LayoutReferrers(
                    [e.descriptor for e in entries], self._read_document, self
                )
                self._entries = _Index(entries, referrers)
            return self._entries

    async def _load_index(self) -> list[IndexEntry]:
        root = anyio.Path(self.root)
        if not await root.is_dir():
            if await root.exists():
                raise StoreError(
                    self.description,
                    "is a file, not a store directory (an OCI image layout); to read an "
                    f"archive, name it docker-archive:{self.root} or use `hatchway load`",
                )
            raise StoreError(self.description, "no such directory (set --store or $HATCHWAY_STORE)")
        with self._translate("oci-layout"):
            layout = await anyio.to_thread.run_sync(
                read_regular, self.root / "oci-layout", MAX_DOCUMENT_SIZE
            )
        with self._translate(INDEX_NAME):
            raw = await anyio.to_thread.run_sync(
                read_regular, self.root / INDEX_NAME, MAX_DOCUMENT_SIZE
            )
        with self._malformed():
            version = parse_json_object(layout, "oci-layout").get("imageLayoutVersion")
            if version != LAYOUT_VERSION:
                raise MalformedContent(f"oci-layout: unsupported imageLayoutVersion {version!r}")
            descriptors = parse_index(parse_json_object(raw, INDEX_NAME), INDEX_NAME)
        return [IndexEntry(d, entry_reference(d.annotations)) for d in descriptors]

    async def _read_document(self, descriptor: Descriptor) -> bytes:
        if descriptor.size > MAX_DOCUMENT_SIZE:
            raise StoreError(
                self.description,
                f"{descriptor.digest}: document of {descriptor.size} bytes is too large",
            )
        with self._translate(descriptor.digest):
            raw, actual = await self._documents(self._blob_path(descriptor.digest))
        if actual != descriptor.digest:
            raise DigestMismatch(
                f"{self.description}: blob {descriptor.digest}", descriptor.digest, actual
            )
        if len(raw) != descriptor.size:
            raise StoreError(
                self.description,
                f"blob {descriptor.digest}: {len(raw)} bytes, descriptor says {descriptor.size}",
            )
        return raw

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        return self.root / "blobs" / algorithm / encoded

    async def _chunks(self, reader: RegularFileReader, digest: str) -> AsyncGenerator[bytes]:
        while True:
            with self._translate(digest):
                chunk = await anyio.to_thread.run_sync(reader.read, CHUNK_SIZE)
            if not chunk:
                return
            yield chunk

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            if what.startswith("sha256:"):
                raise BlobNotFound(self.description, what) from None
            raise StoreError(
                self.description, f"not an OCI image layout: {what} is missing"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EISDIR or not exc.strerror:
                raise StoreError(self.description, f"{what}: unreadable") from None
            raise StoreError(self.description, f"{what}: {exc.strerror}") from None

    @contextmanager
    def _malformed(self) -> Iterator[None]:
        try:
            yield
        except MalformedContent as exc:
            raise StoreError(self.description, str(exc)) from None


def _unreadable_note(errors: list[HatchwayError]) -> str | None:
    """What :class:`NoSuchImage` adds when some entries could not be read: how many, and
    the first one's error."""
    if not errors:
        return None
    count = f"{len(errors)} store entr{'y' if len(errors) == 1 else 'ies'}"
    return f"{count} could not be read, the first: {errors[0]}"


def _read_hashed(path: Path) -> tuple[bytes, str]:
    """Blocking: a document's bytes and their digest."""
    raw = read_regular(path, MAX_DOCUMENT_SIZE)
    return raw, sha256_digest(raw)
