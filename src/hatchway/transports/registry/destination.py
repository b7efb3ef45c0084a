"""A registry as a copy's destination: what ``push`` writes into.

Layers are kept as the registry keeps them, compressed (:attr:`LayerForm.STORED`): a layer the
source stores compressed goes up as it is; one stored uncompressed (archives hold layers so)
is compressed on the way (``--compress-layers``, deterministically: ``hatchway.encode``) and
the manifest pushed for its image names the compressed blob instead — same config, same image
ID, another manifest digest.

Every image goes to the repositories its names map to (``targets``), so the plan says which
repositories need which blob.  For each blob, once:

1. ``HEAD`` it in every repository that needs it, and skip those that have it;
2. where it is missing, **mount** it from a repository of the registry that has it — one that
   already did, the one it was just uploaded into, or the image's source repository when the
   source is this very registry (then nothing is read from the source at all);
3. upload it (``upload``) into the first repository still missing it, and mount it into the
   others; a registry that answers a mount with 202 gets an upload instead.

Order, so that a failed push never leaves a tag pointing at missing content: every layer
first (the engine), then per image its config, then its manifest under each of its names — a
tag is written only once everything it needs is in place, and the registry checks that too.
A push that fails before that writes no tag at all; blobs already uploaded stay (unreferenced,
content-addressed; the registry's garbage collection removes them, a later push reuses them).

The source never needs to be the local store: any :class:`~hatchway.transports.base.Source`
whose images carry blobs works the same way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import anyio
import httpx

from hatchway.concurrency import collapse_errors
from hatchway.encode import LayerCompression
from hatchway.errors import RegistryError
from hatchway.model import Descriptor, Layer, replace_layers, sha256_digest
from hatchway.progress import UploadAdvanced, UploadDone, UploadStarted
from hatchway.staging import make_staging_dir, remove_staging_dir
from hatchway.transports.base import (
    CopyContext,
    CopyImage,
    CopyPlan,
    DestinationCapabilities,
    LayerForm,
    LocalBlob,
)
from hatchway.transports.registry.client import RegistryClient
from hatchway.transports.registry.options import RegistryOptions
from hatchway.transports.registry.protocol import push_scope
from hatchway.transports.registry.push_plan import PushPlan
from hatchway.transports.registry.staged import StagedUpload, check_file
from hatchway.transports.registry.targets import PushName, PushTarget
from hatchway.transports.registry.upload import BlobUploader, StagedBlob


@dataclass(frozen=True, slots=True)
class PushedManifest:
    """One name a push wrote: ``HOST/REPO:TAG`` (or ``HOST/REPO@sha256:...`` when pushed by
    digest), the digest of the manifest pushed, and the image ID."""

    name: str
    digest: str
    id: str


@dataclass(frozen=True, slots=True)
class PushReport:
    """What a push wrote.  ``uploaded``/``bytes_uploaded`` count blob uploads (a blob needed
    in several repositories is uploaded once and mounted into the others); ``mounted`` counts
    blobs linked into a repository from another one; ``skipped`` counts blobs a repository
    already held.  Configs count as blobs."""

    manifests: tuple[PushedManifest, ...]
    uploaded: int
    bytes_uploaded: int
    mounted: int
    skipped: int


class RegistryDestination:
    """Push into the registry of ``target``, compressing uncompressed layers with
    ``compression``; staging (only what must be compressed or fetched) under ``tmpdir``."""

    #: Blobs the registry has are skipped; a stored-form local layer file is uploaded from
    #: where it is, hashed first.
    capabilities = DestinationCapabilities(
        LayerForm.STORED, holds_layers=True, adopts_local_files=True
    )

    def __init__(
        self,
        target: PushTarget,
        options: RegistryOptions | None = None,
        *,
        compression: LayerCompression = LayerCompression.GZIP,
        tmpdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.target = target
        self.options = options or RegistryOptions()
        self.compression = compression
        self.tmpdir = tmpdir
        self.description = f"registry {target.registry}"

    @asynccontextmanager
    async def receive(self, plan: CopyPlan, context: CopyContext) -> AsyncIterator[_PushReceiver]:
        layout = PushPlan(self.target, plan, self.compression)
        directory = await make_staging_dir(self.tmpdir or tempfile.gettempdir())
        # Each of the ``jobs`` uploads holds a connection for as long as its body takes, so
        # the destination gets at least as many (more than the default only when asked for).
        connections = max(self.options.max_connections_per_registry, context.jobs)
        options = replace(self.options, max_connections_per_registry=connections)
        client = RegistryClient(self.target.registry, options)
        try:
            # Configs go up while the engine moves layers (they need nothing but themselves);
            # the task group owns them, so a failure on either side cancels the other.
            with collapse_errors():
                async with anyio.create_task_group() as tg:
                    receiver = _PushReceiver(self, layout, client, directory, context)
                    for config in layout.configs:
                        tg.start_soon(receiver.place_config, config)
                    yield receiver
        finally:
            await remove_staging_dir(directory)
            with anyio.CancelScope(shield=True):
                await client.aclose()


class _PushReceiver:
    """One push's way into the registry (a :class:`~hatchway.transports.base.Receiver`)."""

    def __init__(
        self,
        destination: RegistryDestination,
        layout: PushPlan,
        client: RegistryClient,
        directory: Path,
        context: CopyContext,
    ) -> None:
        self._target = destination.target
        self._layout = layout
        self._client = client
        self._uploader = BlobUploader(client)
        self._directory = directory
        self._progress = context.progress
        self._slots = anyio.CapacityLimiter(context.jobs)
        #: Per blob: the repositories that still lack it after the HEADs of ``has_layer``.
        self._missing: dict[str, list[str]] = {}
        #: Per uncompressed source layer: the compressed blob pushed in its place.
        self._replaced: dict[str, Descriptor] = {}
        #: Per config: set once it is in every repository that needs it.
        self._configs = {digest: anyio.Event() for digest in layout.configs}
        self.uploaded = self.bytes_uploaded = self.mounted = self.skipped = 0

    # -- the Receiver protocol -----------------------------------------------------------

    async def has_layer(self, layer: Layer) -> bool:
        if self._layout.recompress(layer):
            return False  # its digest is known only once compressed: checked in commit()
        digest = layer.blob.digest
        missing = await self._place(digest, self._layout.blobs[digest], self._same_registry(digest))
        self._missing[digest] = missing
        return not missing

    async def adopt_file(self, layer: Layer, local: LocalBlob, source: str) -> bool:
        if self._layout.recompress(layer):
            return False
        if local.offset or local.size is not None:
            return False  # a range of a file (an archive member): the engine stages it
        path = local.path
        await anyio.to_thread.run_sync(check_file, path, layer, source)
        blob = StagedBlob(path, layer.blob.digest, layer.blob.size)
        await self._deliver(blob, await self._still_missing(layer))
        return True

    async def open_layer(self, layer: Layer) -> StagedUpload:
        encoder = self._layout.compression if self._layout.recompress(layer) else None
        return await StagedUpload.create(self._directory, layer, encoder, self.stage)

    async def commit(self) -> PushReport:
        pushed: list[list[PushedManifest]] = [[] for _ in self._layout.images]
        with collapse_errors():
            async with anyio.create_task_group() as tg:
                for n, image in enumerate(self._layout.images.values()):
                    tg.start_soon(self._push_image, image, pushed[n])
        by_name = {m.name: m for ms in pushed for m in ms}
        ordered = list(dict.fromkeys(m.name for ms in pushed for m in ms))
        return PushReport(
            tuple(by_name[n] for n in ordered),
            self.uploaded,
            self.bytes_uploaded,
            self.mounted,
            self.skipped,
        )

    # -- blobs ---------------------------------------------------------------------------

    async def _place(self, digest: str, repositories: list[str], donor: str | None) -> list[str]:
        """Skip the repositories that hold ``digest``, mount it into the others from one that
        does (or from ``donor``); return those still missing it, in order."""
        present = await _gather([partial(self._uploader.exists, r, digest) for r in repositories])
        missing = [r for r, has in zip(repositories, present, strict=True) if not has]
        self.skipped += len(repositories) - len(missing)
        donor = next((r for r, has in zip(repositories, present, strict=True) if has), donor)
        if not missing or donor is None:
            return missing
        mounted = await _gather([partial(self._mount, r, digest, donor) for r in missing])
        return [r for r, done in zip(missing, mounted, strict=True) if not done]

    async def _mount(self, repository: str, digest: str, donor: str) -> bool:
        done = await self._uploader.mount(repository, digest, donor)
        self.mounted += done
        return done

    async def _deliver(self, blob: StagedBlob, missing: list[str]) -> None:
        """Upload ``blob`` into the first repository missing it and mount it into the rest."""
        if not missing:
            return
        first, rest = missing[0], missing[1:]
        await self._upload(first, blob)
        mounted = await _gather([partial(self._mount, r, blob.digest, first) for r in rest])
        for repository, done in zip(rest, mounted, strict=True):
            if not done:
                await self._upload(repository, blob)

    async def _upload(self, repository: str, blob: StagedBlob) -> None:
        async with self._slots:
            self._progress(UploadStarted(blob.digest, blob.size))

            def sent(n: int) -> None:
                self._progress(UploadAdvanced(blob.digest, n))

            await self._uploader.upload(repository, blob, sent)
            self._progress(UploadDone(blob.digest, blob.size))
        self.uploaded += 1
        self.bytes_uploaded += blob.size

    def _same_registry(self, digest: str) -> str | None:
        """The source repository, when the blob comes from this very registry."""
        origin = self._layout.sources[digest].capabilities.origin
        if origin is not None and origin.registry == self._client.domain:
            return origin.repository
        return None

    async def stage(self, layer: Layer, blob: StagedBlob, descriptor: Descriptor) -> None:
        """A staged layer is verified (and compressed): put it wherever it is missing."""
        if self._layout.recompress(layer):
            self._replaced[layer.blob.digest] = descriptor
            missing = await self._place(blob.digest, self._layout.blobs[layer.blob.digest], None)
        else:
            missing = await self._still_missing(layer)
        await self._deliver(blob, missing)

    async def _still_missing(self, layer: Layer) -> list[str]:
        """The repositories that lack ``layer``'s blob: as :meth:`has_layer` found them, or
        found now if it was not asked (the engine asks only what it needs to)."""
        digest = layer.blob.digest
        if digest not in self._missing:
            self._missing[digest] = await self._place(
                digest, self._layout.blobs[digest], self._same_registry(digest)
            )
        return self._missing[digest]

    # -- configs and manifests -------------------------------------------------------------

    async def place_config(self, digest: str) -> None:
        """Put a config into every repository that needs it (from the start of the push)."""
        image = self._layout.configs[digest]
        descriptor = image.manifest.config
        repos = self._layout.blobs[digest]
        missing = await self._place(digest, repos, self._same_registry(digest))
        if missing:
            path = self._directory / f"config-{digest.removeprefix('sha256:')}"
            await anyio.Path(path).write_bytes(image.config.raw)
            await self._deliver(StagedBlob(str(path), digest, descriptor.size), missing)
        self._configs[digest].set()

    async def _push_image(self, image: CopyImage, out: list[PushedManifest]) -> None:
        """Every layer is in place: once the config is too, write the image's names."""
        await self._configs[image.image.manifest.config.digest].wait()
        raw = replace_layers(image.image.manifest_raw, self._replaced)
        digest = sha256_digest(raw)
        for name in self._layout.names[image.id]:
            await self._put_manifest(name, raw, digest, image.image.manifest.media_type)
            where = f"{self._target.registry}/{name.repository}"
            label = f"{where}:{name.tag}" if name.tag else f"{where}@{digest}"
            out.append(PushedManifest(label, digest, image.id))

    async def _put_manifest(self, name: PushName, raw: bytes, digest: str, media_type: str) -> None:
        repository = name.repository
        url = f"/v2/{repository}/manifests/{name.tag or digest}"
        headers = {"Content-Type": media_type, "Content-Length": str(len(raw))}
        what = f"manifest {name.tag or digest}"
        scopes = (push_scope(repository),)
        policy = self._client.options.retry
        claimed = None
        for attempt in range(policy.retries + 1):
            retry_after = None
            try:
                async with self._client.request(
                    "PUT", url, repository, scopes=scopes, headers=headers, body=lambda: raw
                ) as r:
                    if r.status_code in (200, 201, 204):
                        claimed = r.headers.get("docker-content-digest")
                        break
                    error, retryable, retry_after = await self._client.failure(r, repository, what)
                if not retryable or attempt == policy.retries:
                    raise error
            except httpx.TransportError as exc:
                if attempt == policy.retries:
                    raise self._client.transport_failure(exc, repository, what) from None
            await policy.sleep(policy.delay(attempt, retry_after))
        if claimed and claimed != digest:
            message = f"{what}: the registry stored it as {claimed}, not as {digest}"
            raise RegistryError(self._client.domain, repository, message)


async def _gather(calls: list[Callable[[], Awaitable[bool]]]) -> list[bool]:
    """Run the calls concurrently; their results in order (the first error wins)."""
    results = [False] * len(calls)

    async def run(n: int) -> None:
        results[n] = await calls[n]()

    with collapse_errors():
        async with anyio.create_task_group() as tg:
            for n in range(len(calls)):
                tg.start_soon(run, n)
    return results
