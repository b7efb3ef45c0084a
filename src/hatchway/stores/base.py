"""The Store protocol: the one narrow interface between the engine and where images live.

A store answers *which images does this name mean?* (:meth:`Store.resolve`); each image
it returns carries a :class:`BlobSource` that answers *what are the bytes of this blob?*
(:meth:`BlobSource.open_blob`).  A local store is its own blob source; a registry store hands
out one source per repository, because a registry serves blobs per repository.

Division of labour for verification, so that nothing is checked twice and nothing is trusted:

* A store verifies what it parses while resolving: every manifest, index and config it reads
  is checked against its descriptor's digest and size before it is believed.
* A store does **not** verify layer blobs; :meth:`BlobSource.open_blob` hands over raw bytes
  and the engine's staging verifies both the blob digest and the diffID while it decompresses.

Stores are wrapped, not subclassed: a throttled store, a counting store or a router that sends
``docker://`` names to a registry all implement this same protocol around another store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from hatchway.model import Descriptor, ImageConfig, Layer, Manifest, Platform
from hatchway.reference import ImageQuery, Reference

#: The size of the chunks stores yield from :meth:`Store.open_blob`.
CHUNK_SIZE = 1 << 20


@runtime_checkable
class BlobSource(Protocol):
    """Where the blobs of resolved images are read from (a store, or one registry repository).

    Implementations must be safe to call concurrently.
    """

    #: A short human name for messages, e.g. ``store /var/lib/hatchway/store``.
    description: str

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

    def local_path(self, descriptor: Descriptor) -> str | None:
        """A path to the blob's file on this machine, if the source keeps blobs as files.

        A capability, not a promise that the file is intact: the engine reads the file itself
        (without copying it when it is uncompressed) and still verifies it.
        """
        ...


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """One image a name resolved to, with the tags that name records for it.

    ``manifest_digest`` is the digest of the platform-specific manifest (the ``repo@digest``
    of a single image); ``tags`` is empty when the name was an ID or a digest reference;
    ``source`` serves the image's layer blobs.
    """

    manifest_digest: str
    manifest: Manifest
    config: ImageConfig
    layers: tuple[Layer, ...]
    source: BlobSource = field(compare=False, repr=False)
    tags: tuple[Reference, ...] = ()

    @property
    def id(self) -> str:
        return self.config.id

    def with_tags(self, tags: tuple[Reference, ...]) -> ResolvedImage:
        return ResolvedImage(
            self.manifest_digest, self.manifest, self.config, self.layers, self.source, tags
        )


@runtime_checkable
class Store(Protocol):
    """Where images come from: resolves names.  Must be safe to call concurrently."""

    #: A short human name for messages, e.g. ``store /var/lib/hatchway/store``.
    description: str

    async def resolve(self, query: ImageQuery, platform: Platform | None) -> list[ResolvedImage]:
        """The images ``query`` names, in a stable order (each image once).

        ``platform`` picks the manifest of a multi-platform index (``None``: the host's
        platform for indexes, and any platform for a single-platform image).

        Raises :class:`~hatchway.errors.NoSuchImage`,
        :class:`~hatchway.errors.AmbiguousReference`,
        :class:`~hatchway.errors.PlatformNotFound`,
        :class:`~hatchway.errors.DigestMismatch` (a manifest or config that does not match its
        digest) and :class:`~hatchway.errors.StoreError` (unreadable or malformed store).
        """
        ...

    async def aclose(self) -> None:
        """Release connections and caches.  Idempotent."""
        ...
