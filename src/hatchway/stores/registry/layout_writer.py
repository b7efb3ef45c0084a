"""Write into a local OCI image layout safely: atomic blobs, a locked ``index.json``.

Rules (docs/registry.md, "the index.json concurrency rule"):

* A blob is written to a temp file in ``blobs/sha256/`` and renamed to its digest only after
  its size and sha256 check out; a failed or cancelled write removes the temp file.  A blob that
  already exists with the right size is not fetched again (content-addressed files are
  immutable; the exporter verifies every blob it reads anyway).
* ``index.json`` is changed only while holding an exclusive ``fcntl.flock`` on
  ``index.json.lock``: the current file is re-read under the lock, entries of the same name are
  replaced, and the result is written to a temp file, flushed, and ``os.replace``-d over the old
  one.  Two concurrent pulls therefore never lose each other's entries, and a reader never sees
  a half-written file.  The lock is taken in a worker thread (``anyio.to_thread``) so the event
  loop never blocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import anyio

from hatchway.errors import DigestMismatch, OutputError, StoreError
from hatchway.model import OCI_INDEX, Descriptor, hex_of
from hatchway.reference import Reference, parse_stored_name

IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
LOCK_NAME = "index.json.lock"


class LayoutWriter:
    """Adds blobs and named entries to the OCI image layout at ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.description = f"store {self.root}"

    async def ensure_layout(self) -> None:
        """Create the directories and ``oci-layout`` (atomically) unless they exist."""
        await anyio.to_thread.run_sync(self._ensure_layout_sync)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    async def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the store already holds this blob intact (right size *and* digest): a
        damaged copy is fetched again and replaced, not trusted."""
        path = self.blob_path(descriptor.digest)
        try:
            stat = await anyio.Path(path).stat()
        except OSError:
            return False
        if stat.st_size != descriptor.size:
            return False
        return await anyio.to_thread.run_sync(_digest_of, path) == descriptor.digest

    async def write_bytes(self, descriptor: Descriptor, data: bytes) -> None:
        """Store a small blob whose bytes are in memory (verified first)."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.write_stream(descriptor, one())

    async def write_stream(
        self,
        descriptor: Descriptor,
        chunks: AsyncIterator[bytes],
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        """Store a blob from a chunk stream; renamed into place only if digest and size match."""
        out, temp = await anyio.to_thread.run_sync(self._open_temp)
        try:
            await self._receive_locked(descriptor, chunks, out, on_chunk)
            await anyio.to_thread.run_sync(_commit, out, temp, self.blob_path(descriptor.digest))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, out, temp)
            raise

    async def _receive_locked(
        self,
        descriptor: Descriptor,
        chunks: AsyncIterator[bytes],
        out: IO[bytes],
        on_chunk: Callable[[int], None] | None,
    ) -> None:
        """Write ``chunks`` to ``out`` (our temp file), checking size and digest."""
        hasher = hashlib.sha256()
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > descriptor.size:
                raise StoreError(
                    self.description,
                    f"blob {descriptor.digest} is longer than its {descriptor.size} bytes",
                )
            await anyio.to_thread.run_sync(_hash_and_write, hasher, out, chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
        if size != descriptor.size:
            raise StoreError(
                self.description,
                f"blob {descriptor.digest} ended after {size} of {descriptor.size} bytes",
            )
        actual = "sha256:" + hasher.hexdigest()
        if actual != descriptor.digest:
            raise DigestMismatch(
                f"{self.description}: blob {descriptor.digest}", descriptor.digest, actual
            )

    async def add_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        """Add index descriptors, each replacing any entry that names the same image."""
        await anyio.to_thread.run_sync(self._add_entries_sync, list(entries))

    # -- worker-thread halves ------------------------------------------------------------

    def _ensure_layout_sync(self) -> None:
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                _atomic_write(layout, OCI_LAYOUT_BYTES)
        except OSError as exc:
            raise OutputError(f"cannot create the store {self.root}: {exc.strerror}") from None

    def _open_temp(self) -> tuple[IO[bytes], str]:
        try:
            fd, temp = tempfile.mkstemp(prefix=".pull-", suffix=".tmp", dir=self.blobs)
        except OSError as exc:
            raise OutputError(f"cannot write into {self.blobs}: {exc.strerror}") from None
        return os.fdopen(fd, "wb"), temp

    def _add_entries_sync(self, entries: list[dict[str, Any]]) -> None:
        lock_path = self.root / LOCK_NAME
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self._read_index_locked()
            manifests = [m for m in doc["manifests"] if not _replaced_by(m, entries)]
            doc["manifests"] = manifests + entries
            data = (json.dumps(doc, indent=2) + "\n").encode()
            _atomic_write(self.root / "index.json", data)
        except OSError as exc:
            raise OutputError(f"cannot update {self.root / 'index.json'}: {exc.strerror}") from None
        finally:
            os.close(lock)  # closing the descriptor releases the flock

    def _read_index_locked(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise StoreError(self.description, "index.json is malformed; not overwriting it")
        doc.setdefault("manifests", [])
        return doc


def entry_name(entry: dict[str, Any]) -> Reference | str | None:
    """What an index entry is named, by the store's rule (``stores/oci_layout.py``).

    A tagged name compares as a :class:`Reference`; an untagged containerd-style name
    (``host/repo@sha256:...``) as its text.
    """
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return None
    text = annotations.get(IMAGE_NAME_ANNOTATION) or annotations.get(REF_NAME_ANNOTATION)
    if not isinstance(text, str):
        return None
    return parse_stored_name(text) or (text if "@" in text else None)


def _replaced_by(existing: object, entries: list[dict[str, Any]]) -> bool:
    if not isinstance(existing, dict):
        return False
    name = entry_name(existing)
    return name is not None and any(entry_name(e) == name for e in entries)


def _digest_of(path: Path) -> str | None:
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                hasher.update(chunk)
    except OSError:
        return None
    return "sha256:" + hasher.hexdigest()


def _hash_and_write(hasher: Any, out: IO[bytes], chunk: bytes) -> None:
    hasher.update(chunk)
    out.write(chunk)


def _commit(out: IO[bytes], temp: str, final: Path) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()
    os.chmod(temp, 0o644)
    os.replace(temp, final)


def _discard(out: IO[bytes], temp: str) -> None:
    with contextlib.suppress(OSError):
        out.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
