"""Registries as a store: ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` names.

:class:`RegistryStore` implements the :class:`~hatchway.transports.base.Store` protocol for
queries whose reference carries the ``docker://`` transport.  Name rules:

* ``docker://host/repo`` means ``:latest`` (a registry cannot list "every tag" cheaply, and
  skopeo and Docker read a tag-less registry name the same way);
* ``docker://host/repo:tag`` records the tag ``host/repo:tag`` (the registry host is kept,
  except for Docker Hub, docs/names.md), so it matches the same image pulled into a local store;
* ``docker://host/repo@sha256:...`` records no tag.

Where a name is read from follows registries.conf (:mod:`.mirrors`): each mirror that applies,
in order, then the primary location; the first that has the manifest serves the whole image
(its child manifests, config and layers).  An endpoint that cannot be reached, refuses access
or lacks the image falls through to the next; when all fail the primary's error is raised,
naming what the mirrors said.  The recorded names are always the names asked for.

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
from dataclasses import replace

import anyio

from hatchway.concurrency import KeyedOnce, collapse_errors
from hatchway.errors import (
    DigestMismatch,
    MalformedContent,
    NoSuchImage,
    RegistryError,
    StoreError,
    UnsupportedMediaType,
)
from hatchway.limits import PEEK_GRACE, PEEK_MIN
from hatchway.model import (
    Compression,
    Descriptor,
    ImageConfig,
    Manifest,
    layer_compression,
    parse_config,
    sha256_digest,
)
from hatchway.reference import DEFAULT_TAG, ImageQuery, Reference
from hatchway.transports.base import (
    BlobCapabilities,
    BlobOrigin,
    LocalBlob,
    ResolvedImage,
    Selection,
)
from hatchway.transports.images import load_images
from hatchway.transports.registry.client import FetchedDocument, RegistryClient
from hatchway.transports.registry.mirrors import Endpoint, RegistriesConf, load_registries_conf
from hatchway.transports.registry.options import RegistryOptions


class RepositorySource:
    """The blobs of one registry repository (a :class:`~hatchway.transports.base.BlobSource`)."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.description = f"registry {client.domain}, repository {repository}"
        self.capabilities = BlobCapabilities(
            size_hints=True, origin=BlobOrigin(client.domain, repository)
        )

    def open_blob(
        self, descriptor: Descriptor
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.client.open_blob(self.repository, descriptor)

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        return None

    def size_hint(self, descriptor: Descriptor) -> int | None:
        """The blob's uncompressed size as its gzip trailer says, if it was read while the
        image resolved (:meth:`RegistryClient.peek_size`): a hint, never trusted."""
        return self.client.size_hints.get(descriptor.digest)


class RegistryClients:
    """One client per registry host — its connection pool and its token cache — for as many
    operations as share it (a :class:`hatchway.Session`'s, or one operation's)."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self._clients: dict[tuple[str, bool], RegistryClient] = {}
        self._conf: RegistriesConf | None = None
        self._conf_lock = anyio.Lock()

    def client(self, domain: str, insecure: bool = False) -> RegistryClient:
        """The client for a registry host, made on first use (``insecure``: as
        registries.conf marks an endpoint, on top of ``--insecure-registry``)."""
        key = (domain, insecure)
        client = self._clients.get(key)
        if client is None:
            options = self.options.with_insecure(domain) if insecure else self.options
            client = self._clients[key] = RegistryClient(domain, options)
        return client

    async def registries_conf(self) -> RegistriesConf:
        """The registries.conf these options follow, read once (in a worker thread)."""
        async with self._conf_lock:
            if self._conf is None:
                self._conf = await anyio.to_thread.run_sync(load_registries_conf, self.options)
            return self._conf

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
    often it is named); ``clients`` shares connections, tokens and the registries.conf with
    other stores (a session's), else the store makes its own and closes them in
    :meth:`aclose`.  ``peek_sizes``: while an image's config is fetched, read its gzip layers'
    trailers on idle connections (:meth:`RepositorySource.size_hint`), for an archive that
    can be written in place.
    """

    def __init__(
        self,
        options: RegistryOptions | None = None,
        *,
        clients: RegistryClients | None = None,
        peek_sizes: bool = False,
    ) -> None:
        self._owns_clients = clients is None
        self._peek_sizes = peek_sizes
        self.clients = clients if clients is not None else RegistryClients(options)
        self.options = self.clients.options
        self.description = "registries"
        self._sources: dict[tuple[str, str, bool], RepositorySource] = {}
        self._images: KeyedOnce[tuple[Reference, Selection], list[ResolvedImage]] = KeyedOnce()
        self._configs: KeyedOnce[str, ImageConfig] = KeyedOnce()

    # -- the Source protocol -----------------------------------------------------------

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        ref = query.reference
        if ref is None or not query.registry:
            raise StoreError(self.description, f"{query.text}: not a docker:// registry name")
        return await self.fetch(ref, selection, query.text)

    async def aclose(self) -> None:
        """Close the clients this store made (shared ones belong to their owner)."""
        self._sources.clear()
        if self._owns_clients:
            await self.clients.aclose()

    # -- clients and repositories ------------------------------------------------------

    def client(self, domain: str, insecure: bool = False) -> RegistryClient:
        """The (shared) client for a registry host."""
        return self.clients.client(domain, insecure)

    def source(self, ref: Reference, insecure: bool = False) -> RepositorySource:
        key = (ref.domain, ref.path, insecure)
        source = self._sources.get(key)
        if source is None:
            client = self.client(ref.domain, insecure)
            source = self._sources[key] = RepositorySource(client, ref.path)
        return source

    async def registries_conf(self) -> RegistriesConf:
        """The registries.conf these options follow (read once per set of clients)."""
        return await self.clients.registries_conf()

    async def fetch(self, ref: Reference, selection: Selection, text: str) -> list[ResolvedImage]:
        """Fetch and verify the images ``ref`` names (once per store, however often asked)."""
        key = (Reference(ref.domain, ref.path, ref.tag, ref.digest), selection)
        return await self._images.run(key, lambda: self._fetch(ref, selection, text))

    # -- resolution ----------------------------------------------------------------------

    async def _fetch(self, ref: Reference, selection: Selection, text: str) -> list[ResolvedImage]:
        endpoints = (await self.registries_conf()).pull_endpoints(ref)
        source, there, doc = await self._locate(endpoints, text)
        client = source.client
        where = source.description
        target = there.digest or there.tag or DEFAULT_TAG
        top_digest = sha256_digest(doc.raw)
        if there.digest is not None and top_digest != there.digest:
            raise DigestMismatch(f"{where}: manifest {there.digest}", there.digest, top_digest)
        claimed = doc.claimed_digest
        if (
            there.digest is None
            and claimed
            and claimed.startswith("sha256:")
            and (claimed != top_digest)
        ):
            raise DigestMismatch(f"{where}: manifest {target}", claimed, top_digest)
        top = Descriptor(doc.content_type, top_digest, len(doc.raw))

        async def read_manifest(child: Descriptor) -> bytes:
            return await self._get_child(client, there.path, child, where, text)

        async def read_config(config: Descriptor) -> ImageConfig:
            return await self._configs.run(config.digest, lambda: self._get_config(source, config))

        # While the config is fetched, idle connections read the gzip layers' trailers (their
        # sizes let an archive be written in place); once it is in, what is left of that has
        # PEEK_GRACE (other images' requests free their connections meanwhile).
        with collapse_errors():
            async with anyio.create_task_group() as peeks:

                def manifest_read(manifest: Manifest) -> None:
                    if not self._peek_sizes or sum(la.size for la in manifest.layers) < PEEK_MIN:
                        return  # staging a small image costs less than the requests
                    for layer in manifest.layers:
                        if _is_gzip(layer):
                            peeks.start_soon(client.peek_size, there.path, layer)

                with self._malformed(where):
                    images = await load_images(
                        top,
                        doc.raw,
                        name=text,
                        selection=selection,
                        source=source,
                        read_manifest=read_manifest,
                        read_config=read_config,
                        manifest_read=manifest_read,
                    )
                peeks.cancel_scope.deadline = anyio.current_time() + PEEK_GRACE
        if ref.digest is not None:
            return images
        tags = (Reference(ref.domain, ref.path, ref.tag or DEFAULT_TAG),)
        return [replace(image, tags=tags) for image in images]

    async def _locate(
        self, endpoints: tuple[Endpoint, ...], text: str
    ) -> tuple[RepositorySource, Reference, FetchedDocument]:
        """The first endpoint that serves the manifest, its name there, and the manifest."""
        failed: list[str] = []
        for endpoint in endpoints:
            there = endpoint.reference
            source = self.source(there, endpoint.insecure)
            target = there.digest or there.tag or DEFAULT_TAG
            try:
                doc = await self._get_manifest(source.client, there.path, target, text)
            except (RegistryError, NoSuchImage) as exc:
                if endpoint is endpoints[-1]:
                    raise _with_mirror_failures(exc, failed) from exc.__cause__
                failed.append(f"{endpoint.host}: {_short(exc)}")
                continue
            return source, there, doc
        raise AssertionError("unreachable: there is always a primary endpoint")

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


def _is_gzip(descriptor: Descriptor) -> bool:
    try:
        return layer_compression(descriptor, "layer") is Compression.GZIP
    except UnsupportedMediaType:
        return False  # reported when the image's layers are paired with the config


def _verify(raw: bytes, descriptor: Descriptor, what: str) -> None:
    """``raw`` must be exactly what ``descriptor`` promises: digest first, then size."""
    actual = sha256_digest(raw)
    if actual != descriptor.digest:
        raise DigestMismatch(what, descriptor.digest, actual)
    if len(raw) != descriptor.size:
        raise StoreError(what, f"{len(raw)} bytes, descriptor says {descriptor.size}")


def _short(error: RegistryError | NoSuchImage) -> str:
    if isinstance(error, NoSuchImage):
        return "no such image"
    facts = " ".join(str(f) for f in (error.status, error.code) if f is not None)
    return error.message + (f" (HTTP {facts})" if facts else "")


def _with_mirror_failures(
    error: RegistryError | NoSuchImage, failed: list[str]
) -> RegistryError | NoSuchImage:
    """The primary location's error, saying what the mirrors tried before it said."""
    if not failed:
        return error
    tried = "mirrors also failed: " + "; ".join(failed)
    if isinstance(error, NoSuchImage):
        return NoSuchImage(error.name, tried)
    return RegistryError(
        error.registry,
        error.repository,
        f"{error.message} ({tried})",
        status=error.status,
        code=error.code,
    )
