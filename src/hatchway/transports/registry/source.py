"""Registries as a store: ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` names.

:class:`RegistryStore` implements the :class:`~hatchway.transports.base.Store` protocol for
queries whose reference carries the ``docker://`` transport.  Name rules:

* ``docker://host/repo`` means ``:latest`` (a registry cannot list "every tag" cheaply, and
  skopeo and Docker read a tag-less registry name the same way);
* ``docker://host/repo:tag`` records the tag ``host/repo:tag`` (the registry host is kept,
  except for Docker Hub, docs/names.md), so it matches the same image pulled into a local store;
* ``docker://host/repo@sha256:...`` records no tag.

Verification (the source's half of the contract in ``transports/base.py``): the manifest fetched by
digest must hash to that digest; one fetched by tag must hash to the ``Docker-Content-Digest``
the registry claimed, if any; a platform manifest chosen from an index and every config must
match their descriptor's digest *and* size.  Layer blobs are handed to the engine unverified
through a per-repository :class:`RepositorySource`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager

import anyio

from hatchway.concurrency import KeyedOnce
from hatchway.errors import (
    DigestMismatch,
    MalformedContent,
    NoSuchImage,
    RegistryError,
    StoreError,
)
from hatchway.model import Descriptor, ImageConfig, Platform, parse_config, sha256_digest
from hatchway.reference import DEFAULT_TAG, ImageQuery, Reference
from hatchway.transports.base import LocalBlob, ResolvedImage
from hatchway.transports.images import load_image
from hatchway.transports.registry.client import FetchedDocument, RegistryClient
from hatchway.transports.registry.options import RegistryOptions


class RepositorySource:
    """The blobs of one registry repository (a :class:`~hatchway.transports.base.BlobSource`)."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.description = f"registry {client.domain}, repository {repository}"

    def open_blob(
        self, descriptor: Descriptor
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.client.open_blob(self.repository, descriptor)

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        return None


class RegistryClients:
    """One client per registry host — its connection pool and its token cache — for as many
    operations as share it (a :class:`hatchway.Session`'s, or one operation's)."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self._clients: dict[str, RegistryClient] = {}

    def client(self, domain: str) -> RegistryClient:
        """The client for a registry host, made on first use."""
        client = self._clients.get(domain)
        if client is None:
            client = self._clients[domain] = RegistryClient(domain, self.options)
        return client

    async def aclose(self) -> None:
        """Close every client, even when cancelled and even if one close fails."""
        clients, self._clients = list(self._clients.values()), {}
        with anyio.CancelScope(shield=True):
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()


class RegistryStore:
    """Every registry named by ``docker://`` queries, one client per registry host.

    Resolutions are cached for the store's lifetime (one operation: a tag resolves once however
    often it is named); ``clients`` shares connections and tokens with other stores (a
    session's), else the store makes its own and closes them in :meth:`aclose`.
    """

    def __init__(
        self, options: RegistryOptions | None = None, *, clients: RegistryClients | None = None
    ) -> None:
        self._owns_clients = clients is None
        self.clients = clients if clients is not None else RegistryClients(options)
        self.options = self.clients.options
        self.description = "registries"
        self._sources: dict[tuple[str, str], RepositorySource] = {}
        self._images: KeyedOnce[tuple[Reference, Platform | None], ResolvedImage] = KeyedOnce()
        self._configs: KeyedOnce[str, ImageConfig] = KeyedOnce()

    # -- the Source protocol -----------------------------------------------------------

    async def resolve(self, query: ImageQuery, platform: Platform | None) -> list[ResolvedImage]:
        ref = query.reference
        if ref is None or not query.registry:
            raise StoreError(self.description, f"{query.text}: not a docker:// registry name")
        return [await self.fetch(ref, platform, query.text)]

    async def aclose(self) -> None:
        """Close the clients this store made (shared ones belong to their owner)."""
        self._sources.clear()
        if self._owns_clients:
            await self.clients.aclose()

    # -- clients and repositories ------------------------------------------------------

    def client(self, domain: str) -> RegistryClient:
        """The client for a registry host."""
        return self.clients.client(domain)

    def source(self, ref: Reference) -> RepositorySource:
        key = (ref.domain, ref.path)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = RepositorySource(self.client(ref.domain), ref.path)
        return source

    async def fetch(self, ref: Reference, platform: Platform | None, text: str) -> ResolvedImage:
        """Fetch and verify the image ``ref`` names (once per store, however often asked)."""
        key = (Reference(ref.domain, ref.path, ref.tag, ref.digest), platform)
        return await self._images.run(key, lambda: self._fetch(ref, platform, text))

    # -- resolution ----------------------------------------------------------------------

    async def _fetch(self, ref: Reference, platform: Platform | None, text: str) -> ResolvedImage:
        source = self.source(ref)
        client = source.client
        where = source.description
        target = ref.digest or ref.tag or DEFAULT_TAG
        doc = await self._get_manifest(client, ref.path, target, text)
        top_digest = sha256_digest(doc.raw)
        if ref.digest is not None and top_digest != ref.digest:
            raise DigestMismatch(f"{where}: manifest {ref.digest}", ref.digest, top_digest)
        claimed = doc.claimed_digest
        if (
            ref.digest is None
            and claimed
            and claimed.startswith("sha256:")
            and (claimed != top_digest)
        ):
            raise DigestMismatch(f"{where}: manifest {target}", claimed, top_digest)
        top = Descriptor(doc.content_type, top_digest, len(doc.raw))

        async def read_manifest(child: Descriptor) -> bytes:
            return await self._get_child(client, ref.path, child, where, text)

        async def read_config(config: Descriptor) -> ImageConfig:
            return await self._configs.run(config.digest, lambda: self._get_config(source, config))

        with self._malformed(where):
            loaded = await load_image(
                top,
                doc.raw,
                name=text,
                platform=platform,
                read_manifest=read_manifest,
                read_config=read_config,
            )
        tags: tuple[Reference, ...] = ()
        if ref.digest is None:
            tags = (Reference(ref.domain, ref.path, ref.tag or DEFAULT_TAG),)
        return ResolvedImage(
            loaded.descriptor,
            loaded.raw,
            loaded.manifest,
            loaded.config,
            loaded.layers,
            source,
            tags,
        )

    async def _get_manifest(
        self, client: RegistryClient, repository: str, target: str, text: str
    ) -> FetchedDocument:
        try:
            return await client.get_manifest(repository, target)
        except RegistryError as exc:
            if exc.status == 404:
                raise NoSuchImage(text) from exc
            raise

    async def _get_child(
        self,
        client: RegistryClient,
        repository: str,
        descriptor: Descriptor,
        where: str,
        text: str,
    ) -> bytes:
        doc = await client.get_manifest(repository, descriptor.digest)
        _verify(doc.raw, descriptor, f"{where}: manifest {descriptor.digest}")
        return doc.raw

    async def _get_config(self, source: RepositorySource, descriptor: Descriptor) -> ImageConfig:
        raw = await source.client.get_blob(source.repository, descriptor)
        _verify(raw, descriptor, f"{source.description}: config {descriptor.digest}")
        with self._malformed(source.description):
            return parse_config(raw, descriptor.digest)

    @contextmanager
    def _malformed(self, where: str) -> Iterator[None]:
        try:
            yield
        except MalformedContent as exc:
            raise StoreError(where, str(exc)) from None


def _verify(raw: bytes, descriptor: Descriptor, what: str) -> None:
    """``raw`` must be exactly what ``descriptor`` promises: digest first, then size."""
    actual = sha256_digest(raw)
    if actual != descriptor.digest:
        raise DigestMismatch(what, descriptor.digest, actual)
    if len(raw) != descriptor.size:
        raise StoreError(what, f"{len(raw)} bytes, descriptor says {descriptor.size}")
