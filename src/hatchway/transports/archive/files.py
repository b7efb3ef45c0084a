"""The files of an OCI image layout, wherever they are: members of a tar, or a directory.

``oci-archive:`` and ``oci:`` read the same layout; only where its files live differs.  Both
hand out documents (read whole, size-capped) and blobs (as :class:`~hatchway.transports.base.
LocalBlob` ranges, or streamed).  A directory's files are opened as the store's are
(:func:`hatchway.files.open_regular`): a FIFO or a device in the layout is refused at once,
never waited on or read forever.  Blocking: use from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from hatchway.errors import BlobNotFound, StoreError
from hatchway.files import RegularFileReader, read_regular
from hatchway.limits import CHUNK_SIZE, MAX_DOCUMENT_SIZE
from hatchway.transports.archive.tarindex import TarIndex, normalise
from hatchway.transports.base import LocalBlob


class LayoutFiles(Protocol):
    """The files of one layout, by path relative to its root."""

    description: str

    def exists(self, name: str) -> bool: ...

    def read(self, name: str, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """A whole (document) file; raises :class:`BlobNotFound` for a missing blob and
        :class:`StoreError` otherwise."""
        ...

    def local(self, name: str) -> LocalBlob: ...

    def chunks(self, name: str) -> Iterator[bytes]: ...


def blob_name(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


class TarFiles:
    """A layout inside an indexed tar (``oci-archive:``, or hatchway's ``docker`` format)."""

    def __init__(self, index: TarIndex) -> None:
        self.index = index
        self.description = index.description

    def exists(self, name: str) -> bool:
        return name in self.index

    def read(self, name: str, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """Raises :class:`~hatchway.errors.ArchiveDamage` naming the member when it is missing."""
        return self.index.read(name, limit)

    def local(self, name: str) -> LocalBlob:
        member = self.index.file(name)
        return LocalBlob(self.index.path, member.offset, member.size)

    def chunks(self, name: str) -> Iterator[bytes]:
        return self.index.chunks(self.index.file(name))


class DirFiles:
    """A layout directory (``oci:DIR``).  A path that would leave it is refused."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.description = f"oci {root}"

    def _path(self, name: str) -> Path:
        safe = normalise(name)
        if safe is None or not safe:
            raise StoreError(self.description, f"{name}: unsafe path")
        return self.root / safe

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def read(self, name: str, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        with self._translate(name):
            return read_regular(self._path(name), limit)

    def local(self, name: str) -> LocalBlob:
        return LocalBlob(str(self._path(name)))

    def chunks(self, name: str) -> Iterator[bytes]:
        with self._translate(name):
            reader = RegularFileReader(self._path(name))
        try:
            while chunk := reader.read(CHUNK_SIZE):
                yield chunk
        finally:
            reader.close()

    @contextmanager
    def _translate(self, name: str) -> Iterator[None]:
        """Errors opening ``name`` as the layout's: a missing blob, a missing document, or
        one line saying what is wrong (``is a FIFO, not a regular file``, ``too large``)."""
        try:
            yield
        except FileNotFoundError:
            if name.startswith("blobs/"):
                raise BlobNotFound(self.description, _digest_of(name)) from None
            raise StoreError(
                self.description, f"not an OCI image layout: {name} is missing"
            ) from None
        except OSError as exc:
            raise StoreError(self.description, f"{name}: {exc.strerror or exc}") from None


def _digest_of(name: str) -> str:
    parts = name.split("/")
    return f"{parts[1]}:{parts[2]}" if len(parts) == 3 else name
