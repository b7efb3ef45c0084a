"""The documents of a push — image manifests, indexes, referrers — and its names, written once
every blob they need is in place.

Order, so that nothing a name reaches is ever missing (the registry checks it too): first
every image manifest, by digest, in each repository that needs it; then the indexes,
innermost first; then the names (each tag pointing at what its name pointed at in the
source: an index or a manifest); last the referrers, which need their subject (OCI distribution
spec, "Pushing Manifests with Subject").  A document that a tag of a repository names goes up
under that tag only (a registry stores a manifest pushed by tag under its digest as well).

Digests are kept: every document goes up byte for byte, unless a layer of an image was
compressed on the way (an uncompressed layer of the source): that manifest, and each index
above it, then get new bytes (``model.replace_layers``, ``model.replace_children``) and say so.

Two things a registry may not have, and what is done then (said in the report's notes):

* **Partial indexes.**  A copy of some platforms of an index carries the index as it is; a
  registry that checks that an index's manifests exist (CNCF distribution does) refuses it.
  Then the name points at the one carried image's manifest, or at an index of the carried
  platforms (``model.trim_index``): a new digest.
* **The referrers API** (OCI distribution 1.1).  A registry that has it answers a manifest
  with a ``subject`` with the ``OCI-Subject`` header; one that does not gets the fallback
  the spec describes: the tag ``sha256-<subject hex>`` names an index of the referrers,
  fetched, extended and written back.  cosign's tag-based signatures are written under their
  own tags (``sha256-<hex>.sig`` ...), as cosign does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from hatchway.concurrency import collapse_errors
from hatchway.errors import RegistryError
from hatchway.model import (
    OCI_INDEX,
    Descriptor,
    parse_index,
    parse_json_object,
    replace_children,
    replace_layers,
    sha256_digest,
    trim_index,
)
from hatchway.transports.base import Artifact, Document
from hatchway.transports.registry.client import RegistryClient
from hatchway.transports.registry.protocol import push_scope
from hatchway.transports.registry.push_plan import PushPlan
from hatchway.transports.registry.targets import PushName

#: Error codes with which a registry refuses an index whose manifests it does not hold.
_MISSING_CHILD = frozenset({"MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"})


@dataclass(frozen=True, slots=True)
class PushedManifest:
    """One name a push wrote: ``HOST/REPO:TAG`` (or ``HOST/REPO@sha256:...`` when pushed by
    digest), the digest of what it names now, the image ID of the image its tag is recorded
    for, and whether that digest is the one the name had in the source (``kept``)."""

    name: str
    digest: str
    id: str
    kept: bool = True


@dataclass
class _Written:
    """What went up: per document of the plan, the document that went up in its place."""

    documents: dict[str, Document] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class DocumentWriter:
    """Writes one push's documents and names into the registry of ``client`` (see the module
    docstring); ``layout`` says what goes where."""

    def __init__(self, client: RegistryClient, layout: PushPlan, registry: str) -> None:
        self._client = client
        self._layout = layout
        self._registry = registry
        self._written = _Written()
        self._fallback_lock = anyio.Lock()

    @property
    def notes(self) -> list[str]:
        return self._written.notes

    async def write(self, compressed: Mapping[str, Descriptor]) -> list[PushedManifest]:
        """Write everything; ``compressed`` maps each layer compressed on the way (its
        source digest) to what went up instead."""
        layout = self._layout
        plan = layout.plan
        replaced: dict[str, Descriptor] = {}
        for copied in plan.images:
            image = copied.image
            raw = replace_layers(image.manifest_raw, compressed)
            document = self._document(image.document, raw)
            self._written.documents[image.manifest_digest] = document
            if document.digest != image.manifest_digest:
                replaced[image.manifest_digest] = document.descriptor
        await _each(
            [(d, r) for d in self._written.documents.values() for r in self._untagged(d)],
            self._put_digest,
        )
        for original in reversed(plan.documents):  # innermost first
            raw = replace_children(original.raw, replaced)
            document = self._document(original, raw)
            self._written.documents[original.digest] = document
            if document.digest != original.digest:
                replaced[original.digest] = document.descriptor
            await _each([(document, r) for r in self._untagged(original)], self._put_digest)
        pushed: list[PushedManifest] = []
        for name in plan.names:
            pushed += await self._name(name.target.digest, name.image_id)
        for artifact in plan.artifacts:
            await self._artifact(artifact)
        return pushed

    def _document(self, original: Document, raw: bytes) -> Document:
        if raw is original.raw or raw == original.raw:
            return original
        descriptor = Descriptor(
            original.descriptor.media_type,
            sha256_digest(raw),
            len(raw),
            original.descriptor.annotations,
            original.descriptor.platform,
        )
        return Document(descriptor, raw)

    def _untagged(self, original: Document) -> list[str]:
        """The repositories ``original`` goes to by digest: all that need it but those where a
        tag names it (it goes up under the tag there)."""
        tagged = {n.repository for n in self._layout.names.get(original.digest, []) if n.tag}
        return [r for r in self._layout.repositories(original.digest) if r not in tagged]

    async def _name(self, target: str, image_id: str) -> list[PushedManifest]:
        """Every push name of ``target``, pointing at what went up for it."""
        written = self._written.documents[target]
        pushed = []
        for name in self._layout.names[target]:
            document = written
            if name.tag is not None:
                document = await self._put_tag(target, written, name)
            where = f"{self._registry}/{name.repository}"
            label = f"{where}:{name.tag}" if name.tag else f"{where}@{document.digest}"
            pushed.append(
                PushedManifest(label, document.digest, image_id, document.digest == target)
            )
        return pushed

    async def _put_tag(self, target: str, document: Document, name: PushName) -> Document:
        """``document`` under ``name``'s tag — or, when the registry refuses a partial index,
        what stands in for it (see the module docstring)."""
        assert name.tag is not None
        try:
            await self.put(name.repository, name.tag, document)
        except RegistryError as exc:
            partial = target in self._layout.documents and self._layout.missing_children(target)
            if not partial or not _refuses_children(exc):
                raise
        else:
            return document
        stand_in = await self._stand_in(target, document, name.repository)
        await self.put(name.repository, name.tag, stand_in)
        return stand_in

    async def _stand_in(self, target: str, document: Document, repository: str) -> Document:
        """What a tag names when the registry refuses the partial index ``document``: the one
        image carried under it, or an index of the carried platforms."""
        layout = self._layout
        carried = [c for c in layout.children(target) if c not in layout.missing_children(target)]
        images = [c for c in carried if c.digest in layout.images]
        if len(carried) == 1 and images:
            stand_in = self._written.documents[images[0].digest]
            what = f"the {images[0].platform or 'only'} image's manifest {stand_in.digest}"
        else:
            raw = trim_index(document.raw, {c.digest for c in carried})
            stand_in = self._document(document, raw)
            await self.put(repository, stand_in.digest, stand_in)
            what = f"a new index of the {len(carried)} carried manifests, {stand_in.digest}"
        self._written.notes.append(
            f"registry {self._registry} refuses the partial index {target} "
            f"({len(layout.missing_children(target))} of its manifests are not carried): "
            f"{repository} names {what} instead; save with --platform all to keep the index"
        )
        return stand_in

    async def _artifact(self, artifact: Artifact) -> None:
        """A referrer, into every repository its subject went to: by digest (and under its
        tag, a cosign signature's), and listed where the registry lists referrers."""
        layout = self._layout
        subject = artifact.subject
        if subject is not None and subject in self._written.documents:
            moved = self._written.documents[subject]
            if moved.digest != subject:
                self._written.notes.append(
                    f"referrer {artifact.digest} refers to {subject}, which went up as "
                    f"{moved.digest}: it is pushed as it is and refers to a digest not pushed"
                )
        for repository in layout.repositories(artifact.digest):
            reference = artifact.tag or artifact.digest
            headers = await self.put(repository, reference, artifact.document)
            listed_by_registry = "oci-subject" in headers
            if artifact.tag is None and subject is not None and not listed_by_registry:
                await self._fallback(repository, subject, artifact)

    async def _fallback(self, repository: str, subject: str, artifact: Artifact) -> None:
        """Add ``artifact`` to the index under the referrers tag ``sha256-<hex>`` of
        ``subject`` in ``repository`` (made if there is none)."""
        tag = subject.replace(":", "-")
        async with self._fallback_lock:
            existing = await self._get_index(repository, tag)
            entry = _referrer_descriptor(artifact)
            manifests = [m for m in existing if m.get("digest") != artifact.digest] + [entry]
            doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
            raw = json.dumps(doc, separators=(",", ":")).encode()
            index = Document(Descriptor(OCI_INDEX, sha256_digest(raw), len(raw)), raw)
            await self.put(repository, tag, index)

    async def _get_index(self, repository: str, tag: str) -> list[dict[str, object]]:
        try:
            fetched = await self._client.get_manifest(repository, tag)
        except RegistryError as exc:
            if exc.status == 404:
                return []
            raise
        doc = parse_json_object(fetched.raw, f"referrers index {tag}")
        parse_index(doc, f"referrers index {tag}")  # checked: every entry is a descriptor
        manifests = doc.get("manifests") or []
        return [m for m in manifests if isinstance(m, dict)]

    async def _put_digest(self, document: Document, repository: str) -> None:
        await self.put(repository, document.digest, document)

    async def put(self, repository: str, reference: str, document: Document) -> httpx.Headers:
        """``PUT /v2/<repository>/manifests/<reference>`` with ``document``'s bytes (retried as
        every request is); the answer's headers.  The registry must store it under its
        digest."""
        raw = document.raw
        media_type = document.descriptor.media_type
        url = f"/v2/{repository}/manifests/{reference}"
        headers = {"Content-Type": media_type, "Content-Length": str(len(raw))}
        what = f"manifest {reference}"
        scopes = (push_scope(repository),)
        client = self._client
        policy = client.options.retry
        answered: httpx.Headers | None = None
        for attempt in range(policy.retries + 1):
            retry_after = None
            try:
                async with client.request(
                    "PUT", url, repository, scopes=scopes, headers=headers, body=lambda: raw
                ) as r:
                    if r.status_code in (200, 201, 204):
                        answered = r.headers
                        break
                    error, retryable, retry_after = await client.failure(r, repository, what)
                if not retryable or attempt == policy.retries:
                    raise error
            except httpx.TransportError as exc:
                if attempt == policy.retries:
                    raise client.transport_failure(exc, repository, what) from None
            await policy.sleep(policy.delay(attempt, retry_after))
        assert answered is not None
        claimed = answered.get("docker-content-digest")
        if claimed and claimed != document.digest:
            message = f"{what}: the registry stored it as {claimed}, not as {document.digest}"
            raise RegistryError(client.domain, repository, message)
        return answered


def _refuses_children(error: RegistryError) -> bool:
    return error.code in _MISSING_CHILD or error.status == 404


def _referrer_descriptor(artifact: Artifact) -> dict[str, object]:
    """A referrer's entry in a referrers index: its descriptor, ``artifactType`` and the
    manifest's own annotations (OCI distribution spec, "Listing Referrers")."""
    descriptor = artifact.document.descriptor
    entry: dict[str, object] = {
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if artifact.artifact_type:
        entry["artifactType"] = artifact.artifact_type
    doc = parse_json_object(artifact.document.raw, f"manifest {descriptor.digest}")
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = annotations
    return entry


async def _each(
    items: list[tuple[Document, str]], call: Callable[[Document, str], Coroutine[Any, Any, None]]
) -> None:
    """Run ``call`` for every item concurrently (the first error wins)."""
    with collapse_errors():
        async with anyio.create_task_group() as tg:
            for document, repository in items:
                tg.start_soon(call, document, repository)
