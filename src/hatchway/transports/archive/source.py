"""Archives and OCI layout directories as a source: ``docker-archive:``, ``oci-archive:``,
``oci:`` names (docs/bundles.md).

:class:`ArchiveStore` serves all three path transports.  Each archive (or directory) named is
opened once per copy — indexed, decompressed first into a private file under ``tmpdir`` when
compressed — and closed (the decompressed file removed, shielded from cancellation) by
:meth:`ArchiveStore.aclose`.  An opened archive is also the
:class:`~hatchway.transports.base.BlobSource` of its images: a layer is a byte range of the
archive file, which the engine reads (or an archive output copies in the kernel) and verifies.

What a name selects: without REF every image (in the archive's order, untagged images
included, each with the names recorded for it); ``@N`` the N-th (from 0); a REF the image
recorded under that name — in a docker archive a ``RepoTags`` entry, in an OCI layout an
``org.opencontainers.image.ref.name`` or ``io.containerd.image.name`` annotation, compared as
written or as a normalised name.  How OCI entries are named follows the store's naming rule
(``hatchway.oci_layout``): a bare tag (``bookworm``, as skopeo writes) names no
repository, so such an image is copied untagged, reachable by its ID.

What the source verifies (the source's half of ``transports/base.py``): every document it
parses — a config member named after a digest hashes to it, an OCI manifest, index and config
match their descriptors' digest and size — and that members exist, are files and stay inside
the archive.  Layer bytes are verified by the engine as they move: an uncompressed docker
layer's blob digest is its diffID.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio

from hatchway.concurrency import KeyedOnce
from hatchway.errors import (
    ArchiveDamage,
    BlobNotFound,
    DigestMismatch,
    HatchwayError,
    MalformedContent,
    NoSuchImage,
    PlatformNotFound,
    StoreError,
)
from hatchway.model import (
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Layer,
    Manifest,
    parse_config,
    parse_index,
    parse_json_object,
    sha256_digest,
)
from hatchway.oci_layout import (
    IMAGE_NAME_ANNOTATION,
    INDEX_NAME,
    LAYOUT_VERSION,
    REF_NAME_ANNOTATION,
    entry_reference,
)
from hatchway.reference import (
    ImageQuery,
    Reference,
    Transport,
    parse_archive_name,
    parse_stored_name,
)
from hatchway.transports.archive.docker_reader import (
    ArchivedImage,
    read_docker_archive,
    synthesize_manifest,
)
from hatchway.transports.archive.files import DirFiles, LayoutFiles, TarFiles, blob_name
from hatchway.transports.archive.tarindex import TarIndex
from hatchway.transports.archive.unpack import Scratch
from hatchway.transports.base import BlobCapabilities, LocalBlob, ResolvedImage, Selection
from hatchway.transports.images import load_images
from hatchway.transports.referrers import LayoutReferrers, is_referrer


class ArchiveStore:
    """The source of every ``docker-archive:``, ``oci-archive:`` and ``oci:`` name of a copy.

    ``tmpdir`` holds decompressed copies of compressed archives (default: the system's temp
    directory); they are removed by :meth:`aclose`.
    """

    def __init__(self, tmpdir: str | os.PathLike[str] | None = None) -> None:
        self.tmpdir = None if tmpdir is None else os.fspath(tmpdir)
        self.description = "archives"
        self._opened: KeyedOnce[tuple[Transport, str], OpenedArchive] = KeyedOnce()
        self._indexes: KeyedOnce[str, TarIndex] = KeyedOnce()
        self._scratch = Scratch(self.tmpdir)
        self._closed = False

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        if not query.transport.is_archive or query.path is None:
            raise StoreError(self.description, f"{query.text}: not an archive name")
        archive = await self.open(query.transport, query.path)
        return await archive.resolve(query, selection)

    async def open(self, transport: Transport, path: str) -> OpenedArchive:
        """The archive (or directory) at ``path``, opened once."""
        key = (transport, await anyio.to_thread.run_sync(os.path.realpath, path))
        return await self._opened.run(key, lambda: self._open(transport, path))

    async def query_for(self, text: str) -> ImageQuery:
        """The query for an argument of ``load`` or ``verify``: a transport name as written
        (``docker-archive:PATH[:REF]``, ...), or a bare path, whose kind is found by looking:
        a directory is an OCI layout; a tar with ``manifest.json`` (or a legacy
        ``repositories``) a docker archive, else one with ``index.json`` an OCI archive."""
        named = parse_archive_name(text)
        if named is not None:
            return named
        if await anyio.Path(text).is_dir():
            return ImageQuery(f"oci:{text}", None, None, Transport.OCI, text, None)
        index = await self.index(text)
        docker = "manifest.json" in index or "index.json" not in index
        transport = Transport.DOCKER_ARCHIVE if docker else Transport.OCI_ARCHIVE
        return ImageQuery(text, None, None, transport, text, None)

    async def index(self, path: str) -> TarIndex:
        """The tar at ``path``, indexed (and unpacked, if compressed) once per copy."""
        key = await anyio.to_thread.run_sync(os.path.realpath, path)

        async def index() -> TarIndex:
            if self._closed:
                raise StoreError(self.description, "closed")
            # Abandoned on cancellation: the scratch stops the unpacking and removes its file.
            return await anyio.to_thread.run_sync(
                TarIndex.open, path, path, self._scratch, abandon_on_cancel=True
            )

        return await self._indexes.run(key, index)

    async def _open(self, transport: Transport, path: str) -> OpenedArchive:
        if self._closed:
            raise StoreError(self.description, "closed")
        if transport is Transport.OCI:
            files = DirFiles(path)
            if not await anyio.Path(path).is_dir():
                raise StoreError(files.description, "no such directory")
            return await anyio.to_thread.run_sync(OCILayout, files)
        index = await self.index(path)
        if transport is Transport.DOCKER_ARCHIVE:
            docker = await anyio.to_thread.run_sync(DockerArchive, index)
            if INDEX_NAME in index and "oci-layout" in index:
                docker.use_exact(await _exact_images(index))
            return docker
        return await anyio.to_thread.run_sync(OCILayout, TarFiles(index), index)

    async def aclose(self) -> None:
        """Remove every decompressed copy (shielded).  Idempotent."""
        self._closed = True
        indexes = list(self._indexes.results().values())
        self._opened, self._indexes = KeyedOnce(), KeyedOnce()
        with anyio.CancelScope(shield=True):
            for index in indexes:
                await anyio.to_thread.run_sync(index.close)
            await anyio.to_thread.run_sync(self._scratch.close)


class _Blobs:
    """The blob source half every opened archive shares: ranges of a file by digest."""

    description: str
    #: Every blob is a file or a byte range of one (a member of the archive).
    capabilities = BlobCapabilities(local_files=True)

    def _locate(self, digest: str) -> tuple[LocalBlob, Callable[[], Iterator[bytes]]] | None:
        raise NotImplementedError

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        found = self._locate(descriptor.digest)
        return None if found is None else found[0]

    def size_hint(self, descriptor: Descriptor) -> int | None:
        return None

    @asynccontextmanager
    async def open_blob(self, descriptor: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        found = self._locate(descriptor.digest)
        if found is None:
            raise StoreError(self.description, f"blob {descriptor.digest} not found")
        iterator = found[1]()

        async def chunks() -> AsyncGenerator[bytes]:
            while True:
                chunk = await anyio.to_thread.run_sync(next, iterator, b"")
                if not chunk:
                    return
                yield chunk

        stream = chunks()
        try:
            yield stream
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                await anyio.to_thread.run_sync(_close_iterator, iterator)


def _close_iterator(iterator: Iterator[bytes]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class DockerArchive(_Blobs):
    """An opened ``docker save`` archive (blocking constructor: reads every image's config
    and describes its layers)."""

    def __init__(self, index: TarIndex) -> None:
        self.index = index
        self.description = index.description
        self.images: list[ResolvedImage] = []
        self.recorded: list[tuple[str, ...]] = []
        self._members: dict[str, LocalBlob] = {}
        for archived in read_docker_archive(index):
            self.images.append(self._image(archived))
            self.recorded.append(archived.recorded)

    def close(self) -> None:
        self.index.close()

    def _image(self, archived: ArchivedImage) -> ResolvedImage:
        digest = sha256_digest(archived.config_raw)
        where = archived.config_member or "repositories"
        try:
            config = parse_config(archived.config_raw, digest)
        except MalformedContent as exc:
            raise ArchiveDamage(self.description, str(exc), where) from None
        if len(config.diff_ids) != len(archived.layers):
            raise ArchiveDamage(
                self.description,
                f"manifest.json entry {archived.position}: {len(archived.layers)} layers but "
                f"config {where} has {len(config.diff_ids)} diff_ids",
                "manifest.json",
            )
        layers = []
        for stored, diff_id in zip(archived.layers, config.diff_ids, strict=True):
            if stored.diff_id is not None and stored.diff_id != diff_id:  # a measured member
                raise DigestMismatch(
                    f"{self.description}: member {stored.member.name} (uncompressed content vs "
                    "config diff_id)",
                    diff_id,
                    stored.diff_id,
                )
            blob = stored.blob or Descriptor(OCI_LAYER, diff_id, stored.member.size)
            layers.append(Layer(blob, diff_id, stored.compression))
            member = stored.member
            self._members.setdefault(
                blob.digest, LocalBlob(self.index.path, member.offset, member.size)
            )
        raw = synthesize_manifest(archived.config_raw, [layer.blob for layer in layers])
        descriptor = Descriptor(OCI_MANIFEST, sha256_digest(raw), len(raw))
        manifest = Manifest(
            OCI_MANIFEST,
            Descriptor(
                "application/vnd.oci.image.config.v1+json", digest, len(archived.config_raw)
            ),
            tuple(layer.blob for layer in layers),
        )
        return ResolvedImage(descriptor, raw, manifest, config, tuple(layers), self, archived.tags)

    def use_exact(self, exact: dict[tuple[str, tuple[str, ...]], ResolvedImage]) -> None:
        """Take each image as the archive's OCI half stores it, where that half describes the
        same image (same ID, same layer blobs): its manifest's own bytes and the indexes it
        is in, so its digests are kept; ``manifest.json``'s names stay."""
        for n, image in enumerate(self.images):
            key = (image.id, tuple(la.blob.digest for la in image.layers))
            stored = exact.get(key)
            if stored is not None:
                self.images[n] = replace(stored, tags=image.tags)

    def _locate(self, digest: str) -> tuple[LocalBlob, Callable[[], Iterator[bytes]]] | None:
        local = self._members.get(digest)
        if local is None:
            return None
        assert local.size is not None
        return local, lambda: self.index.read_chunks(local.offset, local.size or 0, digest)

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        chosen = _select_docker(self, query)
        asked = selection.platforms
        for image in chosen:
            if asked and not any(p.matches(image.config.platform) for p in asked):
                raise PlatformNotFound(query.text, str(selection), [str(image.config.platform)])
        return chosen


async def _exact_images(index: TarIndex) -> dict[tuple[str, tuple[str, ...]], ResolvedImage]:
    """The images the OCI half of a docker archive describes (its ``index.json``: the
    documents as stored, every platform the archive holds, their referrers), by image ID and
    layer blob digests — what a ``manifest.json`` entry can be matched with.  An OCI half that
    cannot be read gives none: the archive is then read as ``manifest.json`` says alone
    (``verify`` says what is wrong with the rest)."""
    everything = Selection(all_platforms=True, referrers=True, held_only=True)
    found: dict[tuple[str, tuple[str, ...]], ResolvedImage] = {}
    try:
        layout = await anyio.to_thread.run_sync(OCILayout, TarFiles(index), index)
        for entry in layout.entries:
            for image in await layout.images(entry, blob_name(entry.digest), everything):
                key = (image.id, tuple(la.blob.digest for la in image.layers))
                found.setdefault(key, image)
    except HatchwayError:
        return {}
    return found


def _select_docker(archive: DockerArchive, query: ImageQuery) -> list[ResolvedImage]:
    if query.archive_ref is None:
        return list(archive.images)
    index = query.source_index
    if index is not None:
        if index >= len(archive.images):
            raise NoSuchImage(f"{query.text} (the archive holds {len(archive.images)} images)")
        return [archive.images[index]]
    wanted = query.reference
    assert wanted is not None
    for image in archive.images:
        for tag in image.tags:
            if _same_tag(tag, wanted):
                return [replace(image, tags=(tag,))]
    raise NoSuchImage(query.text)


def _same_tag(a: Reference, b: Reference) -> bool:
    return (a.domain, a.path, a.tag) == (b.domain, b.path, b.tag)


class OCILayout(_Blobs):
    """An opened OCI image layout, in a tar (``index`` given) or a directory."""

    def __init__(self, files: LayoutFiles, index: TarIndex | None = None) -> None:
        self.files = files
        self.index = index
        self.description = files.description
        layout = self._document("oci-layout")
        raw = self._document(INDEX_NAME)
        try:
            version = parse_json_object(layout, "oci-layout").get("imageLayoutVersion")
        except MalformedContent as exc:
            raise ArchiveDamage(self.description, str(exc), "oci-layout") from None
        if version != LAYOUT_VERSION:
            raise ArchiveDamage(
                self.description,
                f"oci-layout: unsupported imageLayoutVersion {version!r}",
                "oci-layout",
            )
        try:
            every = parse_index(parse_json_object(raw, INDEX_NAME), INDEX_NAME)
        except MalformedContent as exc:
            raise ArchiveDamage(self.description, str(exc), INDEX_NAME) from None
        #: The entries that name images (referrers have entries of their own: ``referrers``).
        self.entries = tuple(e for e in every if not is_referrer(e))
        self.referrers = LayoutReferrers(every, self.read_blob, self)
        self._resolved: KeyedOnce[tuple[str, Selection], list[ResolvedImage]] = KeyedOnce()

    def _document(self, name: str) -> bytes:
        if not self.files.exists(name):
            hint = ""
            if name == INDEX_NAME and self.files.exists("manifest.json"):
                hint = " (a docker archive: name it docker-archive:)"
            raise ArchiveDamage(
                self.description, f"not an OCI image layout: {name} is missing{hint}", name
            )
        return self.files.read(name)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()

    def _locate(self, digest: str) -> tuple[LocalBlob, Callable[[], Iterator[bytes]]] | None:
        name = blob_name(digest)
        if not self.files.exists(name):
            return None
        return self.files.local(name), lambda: self.files.chunks(name)

    async def read_blob(self, descriptor: Descriptor) -> bytes:
        """A document blob, checked against its descriptor's digest and size."""
        name = blob_name(descriptor.digest)
        if not await anyio.to_thread.run_sync(self.files.exists, name):
            raise BlobNotFound(self.description, descriptor.digest)
        raw = await anyio.to_thread.run_sync(self.files.read, name)
        actual = sha256_digest(raw)
        if actual != descriptor.digest:
            raise DigestMismatch(f"{self.description}: member {name}", descriptor.digest, actual)
        if len(raw) != descriptor.size:
            raise ArchiveDamage(
                self.description,
                f"member {name}: {len(raw)} bytes, its descriptor says {descriptor.size}",
                name,
            )
        return raw

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        images = []
        for entry in self.select(query):
            name = entry_reference(entry.annotations)
            for image in await self.images(entry, query.text, selection):
                images.append(replace(image, tags=(name,) if name is not None else ()))
        return images

    def select(self, query: ImageQuery) -> list[Descriptor]:
        if query.archive_ref is None:
            return list(self.entries)
        index = query.source_index
        if index is not None:
            if index >= len(self.entries):
                raise NoSuchImage(f"{query.text} (the layout holds {len(self.entries)} images)")
            return [self.entries[index]]
        ref = query.archive_ref
        wanted = parse_stored_name(ref)
        chosen = [
            e
            for e in self.entries
            if ref
            in (e.annotations.get(REF_NAME_ANNOTATION), e.annotations.get(IMAGE_NAME_ANNOTATION))
            or (wanted is not None and entry_reference(e.annotations) == wanted)
        ]
        if not chosen:
            raise NoSuchImage(query.text)
        return chosen[:1]

    async def images(
        self, entry: Descriptor, text: str, selection: Selection
    ) -> list[ResolvedImage]:
        """The images ``selection`` takes of the index entry ``entry`` (read once)."""
        key = (entry.digest, selection)
        return await self._resolved.run(key, lambda: self._load(entry, text, selection))

    async def _load(
        self, entry: Descriptor, text: str, selection: Selection
    ) -> list[ResolvedImage]:
        raw = await self.read_blob(entry)

        async def read_config(descriptor: Descriptor) -> ImageConfig:
            return parse_config(await self.read_blob(descriptor), descriptor.digest)

        try:
            images = await load_images(
                entry,
                raw,
                name=text,
                selection=selection,
                source=self,
                read_manifest=self.read_blob,
                read_config=read_config,
            )
            return await self.referrers.attach(images, selection)
        except MalformedContent as exc:
            raise ArchiveDamage(self.description, str(exc), blob_name(entry.digest)) from None


OpenedArchive = DockerArchive | OCILayout
