"""Writing into a local OCI image layout: atomic blobs, a locked ``index.json``, and the
destination a copy (``pull``) writes into.

Rules (docs/registry.md, "The index.json concurrency rule"):

* A blob is written to a temp file in ``blobs/sha256/`` and renamed to its digest only after
  the engine verified every byte; a failed or cancelled write removes the temp file.  A blob
  that already exists intact (right size *and* digest) is not fetched again; a damaged one is
  fetched again and replaced.
* ``index.json`` is changed only while holding an exclusive ``fcntl.flock`` on
  ``index.json.lock``: the current file is re-read under the lock, entries of the same name are
  replaced, and the result is written to a temp file, flushed, and renamed over the old one.
  Two concurrent copies therefore never lose each other's entries, and a reader never sees a
  half-written file.  The lock is taken in a worker thread so the event loop never blocks,
  and waited for in short steps, so a copy stopped while another process holds the lock
  (Ctrl-C) ends at once, without writing ``index.json``.
* Durable once the copy returned: every blob is flushed before its rename, the blob
  directory before ``index.json`` changes, and ``index.json`` and its directory after it.
  A file the store's reader would refuse (not JSON, an entry that is not a valid descriptor)
  is never overwritten: the copy fails with one line instead.

Order of effects of a copy: the layout itself first (an empty ``index.json`` and
``oci-layout`` where they are missing), then every layer blob, then configs and manifests,
then ``index.json`` once.  A failed copy never adds an entry; verified blobs it already wrote
stay (content-addressed and complete, a later copy reuses them); a store it created is a valid
layout, empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from hatchway.blocking import lock_exclusive
from hatchway.errors import DigestMismatch, MalformedContent, OutputError, StoreError
from hatchway.files import (
    RegularFileReader,
    atomic_write,
    read_regular,
    sync_directory,
    write_all,
)
from hatchway.limits import CHUNK_SIZE, MAX_DOCUMENT_SIZE
from hatchway.model import Descriptor, Layer, hex_of, parse_index, parse_json_object, sha256_digest
from hatchway.oci_layout import (
    IMAGE_NAME_ANNOTATION,
    INDEX_LOCK_NAME,
    INDEX_NAME,
    OCI_LAYOUT_BYTES,
    entry_key,
    index_document,
    index_entry,
    is_referrer_entry,
    name_annotations,
    referrer_entry,
)
from hatchway.reference import Reference
from hatchway.transports.base import (
    CopyContext,
    CopyPlan,
    DestinationCapabilities,
    LayerForm,
    LocalBlob,
)

#: How long a store's temp file must have been untouched to be a killed copy's leftover.
STALE_TEMP_AGE = 3600.0


class LayoutWriter:
    """Adds blobs and named entries to the OCI image layout at ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.description = f"store {self.root}"

    async def ensure_layout(self) -> None:
        """Make ``root`` a valid layout before any blob is written into it: ``index.json``
        (empty) and ``oci-layout`` each written atomically unless they exist, then the blob
        directories.  A copy that fails or is stopped later therefore leaves a store that
        lists its images (none, for a new one), not a directory hatchway refuses to read."""
        await anyio.to_thread.run_sync(self._ensure_layout_sync)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    async def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the store already holds this blob intact (right size *and* digest): a
        damaged copy is fetched again and replaced, not trusted."""
        return await anyio.to_thread.run_sync(self._has_blob_sync, descriptor)

    async def open_blob(self, descriptor: Descriptor) -> BlobFile:
        """A temp file that becomes the blob ``descriptor`` names when committed."""
        fd, temp = await anyio.to_thread.run_sync(self._mkstemp)
        return BlobFile(self, descriptor, fd, temp)

    async def write_bytes(self, descriptor: Descriptor, data: bytes) -> None:
        """Store a small blob whose bytes are in memory, unless it is there intact."""
        actual = sha256_digest(data)
        if actual != descriptor.digest or len(data) != descriptor.size:
            raise DigestMismatch(
                f"{self.description}: blob {descriptor.digest}", descriptor.digest, actual
            )
        if not await self.has_blob(descriptor):
            await anyio.to_thread.run_sync(self._write_bytes_sync, descriptor, data)

    async def add_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        """Add index descriptors, each replacing any entry that names the same image (among
        ``entries`` too: of two that name the same, the later wins, as two loads would)."""
        await anyio.to_thread.run_sync(self._add_entries_sync, _last_per_name(entries))

    # -- worker-thread halves ------------------------------------------------------------

    def _ensure_layout_sync(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / INDEX_NAME).exists():
                # Under the lock: a concurrent copy may be writing its entries right now.
                with self._index_lock():
                    if not (self.root / INDEX_NAME).exists():
                        atomic_write(self.root / INDEX_NAME, _index_bytes(index_document([])))
            layout = self.root / "oci-layout"
            if not layout.exists():
                atomic_write(layout, OCI_LAYOUT_BYTES)
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the store {self.root}: {exc.strerror}") from None
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        """Remove the temp files of copies that were killed (SIGKILL: no cleanup ran) — a
        partial blob can be tens of MiB.  Only those untouched for ``STALE_TEMP_AGE``: a live
        copy writes its temp files at least once per read timeout, or fails."""
        horizon = time.time() - STALE_TEMP_AGE
        for directory in (self.blobs, self.root):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(".hatchway-tmp")):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < horizon:
                        os.unlink(entry.path)

    def _has_blob_sync(self, descriptor: Descriptor) -> bool:
        path = self.blob_path(descriptor.digest)
        hasher = hashlib.sha256()
        try:
            # Not a regular file (a FIFO, a device): not intact, fetched again and replaced.
            reader = RegularFileReader(path)
        except OSError:
            return False
        try:
            if reader.size != descriptor.size:
                return False
            while chunk := reader.read(CHUNK_SIZE):
                hasher.update(chunk)
        except OSError:
            return False
        finally:
            reader.close()
        return "sha256:" + hasher.hexdigest() == descriptor.digest

    def _mkstemp(self) -> tuple[int, str]:
        try:
            return tempfile.mkstemp(prefix=".blob-", suffix=".hatchway-tmp", dir=self.blobs)
        except OSError as exc:
            raise OutputError(f"cannot write into {self.blobs}: {exc.strerror}") from None

    def _write_bytes_sync(self, descriptor: Descriptor, data: bytes) -> None:
        try:
            atomic_write(self.blob_path(descriptor.digest), data, sync_parent=False)
        except OSError as exc:
            raise OutputError(f"cannot write into {self.blobs}: {exc.strerror}") from None

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        """Blocking: hold the exclusive lock that serialises changes to ``index.json``."""
        lock_path = self.root / INDEX_LOCK_NAME
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock {lock_path}: {exc.strerror}") from None
        try:
            lock_exclusive(lock)  # gives up when the copy is cancelled (Ctrl-C)
            yield
        finally:
            os.close(lock)  # closing the descriptor releases the flock

    def _add_entries_sync(self, entries: list[dict[str, Any]]) -> None:
        try:
            # The blobs renamed into place reach the disk before the entry naming them.
            sync_directory(self.blobs)
        except OSError as exc:
            raise OutputError(f"cannot flush {self.blobs}: {exc.strerror}") from None
        try:
            with self._index_lock():
                self._merge_entries_locked(entries)
        except OSError as exc:
            raise OutputError(f"cannot update {self.root / INDEX_NAME}: {exc.strerror}") from None

    def _merge_entries_locked(self, entries: list[dict[str, Any]]) -> None:
        doc = self._read_index_locked()
        named = {e["digest"] for e in entries if _name_of(e) is not None}
        manifests = [
            m
            for m in doc["manifests"]
            if not _replaced_by(m, entries) and not _unnamed_in(m, named)
        ]
        doc["manifests"] = manifests + [e for e in entries if not _already_held(e, manifests)]
        atomic_write(self.root / INDEX_NAME, _index_bytes(doc))

    def _read_index_locked(self) -> dict[str, Any]:
        path = self.root / INDEX_NAME
        try:
            raw = read_regular(path, MAX_DOCUMENT_SIZE)
        except FileNotFoundError:
            return index_document([])
        except OSError as exc:
            raise StoreError(
                self.description, f"index.json: {exc.strerror or exc}; not overwriting it"
            ) from None
        # Parsed and every entry checked here, by the rules the store's reader applies, so
        # the merge can rely on each entry being an object with a valid digest and string
        # annotations (a list as a digest or a number as a name would otherwise fail it as a
        # bug).  The entries stay the raw objects: fields hatchway does not know are written
        # back as they were.
        try:
            doc = parse_json_object(raw, INDEX_NAME)
            doc.setdefault("manifests", [])
            parse_index(doc, INDEX_NAME)
        except MalformedContent:
            raise StoreError(
                self.description, "index.json is malformed; not overwriting it"
            ) from None
        return doc


class BlobFile:
    """One blob being written into the layout (a :class:`~hatchway.transports.base.LayerTarget`):
    a temp file renamed to the blob's digest on :meth:`commit`."""

    def __init__(self, writer: LayoutWriter, descriptor: Descriptor, fd: int, temp: str) -> None:
        self._writer = writer
        self._descriptor = descriptor
        self._fd: int | None = fd
        self._temp = temp
        self.name = temp

    def write(self, data: bytes | memoryview) -> int:
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise OutputError(f"cannot write into {self._writer.blobs}: {exc.strerror}") from None
        return len(data)

    async def commit(self, size: int) -> None:
        await anyio.to_thread.run_sync(self._commit_sync)

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._discard_sync)

    def _commit_sync(self) -> None:
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(self._temp, self._writer.blob_path(self._descriptor.digest))
        except OSError as exc:
            raise OutputError(f"cannot write into {self._writer.blobs}: {exc.strerror}") from None

    def _discard_sync(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)


def _index_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def _last_per_name(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        key = entry_key(entry.get("annotations") or {})
        later = entries[i + 1 :]
        if key is None or all(entry_key(e.get("annotations") or {}) != key for e in later):
            kept.append(entry)
    return kept


def _name_of(entry: dict[str, Any]) -> Reference | str | None:
    return entry_key(entry.get("annotations") or {})


def _unnamed_in(existing: dict[str, Any], digests: set[str]) -> bool:
    """An unnamed image entry for a manifest that is now named: the name replaces it (a
    referrer's entry is not an image's and stays)."""
    annotations = existing.get("annotations") or {}
    return (
        _name_of(existing) is None
        and not is_referrer_entry(annotations)
        and existing["digest"] in digests
    )


def _already_held(entry: dict[str, Any], existing: list[dict[str, Any]]) -> bool:
    """An unnamed entry (an untagged image, a referrer) is added only for a manifest no entry
    refers to yet: loading the same untagged image twice must not grow ``index.json``, and a
    named image is already reachable by its ID."""
    if _name_of(entry) is not None:
        return False
    return any(m["digest"] == entry["digest"] for m in existing)


def _replaced_by(existing: dict[str, Any], entries: list[dict[str, Any]]) -> bool:
    name = entry_key(existing.get("annotations") or {})
    return name is not None and any(entry_key(e.get("annotations") or {}) == name for e in entries)


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One name a copy into the store recorded: ``name`` as written into ``index.json``
    (``host/repo:tag`` or ``host/repo@sha256:...``; ``None`` for an unnamed image), the
    manifest digest and the image ID."""

    name: str | None
    digest: str
    id: str


class LayoutDestination:
    """The local store as a copy's destination: layers kept as the source stores them."""

    #: Blobs the store holds intact are not moved again.
    capabilities = DestinationCapabilities(LayerForm.STORED, holds_layers=True)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.writer = LayoutWriter(root)
        self.description = self.writer.description

    @asynccontextmanager
    async def receive(self, plan: CopyPlan, context: CopyContext) -> AsyncIterator[_LayoutReceiver]:
        await self.writer.ensure_layout()
        yield _LayoutReceiver(self.writer, plan)


class _LayoutReceiver:
    def __init__(self, writer: LayoutWriter, plan: CopyPlan) -> None:
        self._writer = writer
        self._plan = plan

    async def has_layer(self, layer: Layer) -> bool:
        return await self._writer.has_blob(layer.blob)

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        return False

    async def open_layer(self, layer: Layer) -> BlobFile:
        return await self._writer.open_blob(layer.blob)

    async def commit(self) -> tuple[StoredImage, ...]:
        """Every document the copy carries (configs, manifests, indexes, referrers: all
        checked by their source), then ``index.json`` once: each name pointing at what it
        names, each referrer that no index lists as an unnamed entry."""
        plan = self._plan
        for copied in plan.images:
            image = copied.image
            await self._writer.write_bytes(image.manifest.config, image.config.raw)
            await self._writer.write_bytes(image.descriptor, image.manifest_raw)
        for document in plan.documents:
            await self._writer.write_bytes(document.descriptor, document.raw)
        for artifact in plan.artifacts:
            await self._writer.write_bytes(artifact.document.descriptor, artifact.document.raw)
        entries: list[dict[str, Any]] = []
        stored: list[StoredImage] = []
        for name in plan.names:
            target = name.target
            entries.append(index_entry(target.media_type, target, name.reference))
            stored.append(StoredImage(_written_name(name.reference), target.digest, name.image_id))
        entries += referrer_entries(plan)
        await self._writer.add_entries(entries)
        return tuple(stored)


def referrer_entries(plan: CopyPlan) -> list[dict[str, Any]]:
    """The ``index.json`` entries of the plan's referrers (unnamed, saying what they refer
    to)."""
    return [
        referrer_entry(
            a.document.descriptor.media_type,
            a.document.descriptor,
            a.subject,
            a.tag,
            a.artifact_type,
        )
        for a in plan.referrers()
    ]


def _written_name(reference: Reference | None) -> str | None:
    return None if reference is None else name_annotations(reference)[IMAGE_NAME_ANNOTATION]
