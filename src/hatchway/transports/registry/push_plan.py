"""What a push does, decided before anything is sent (pure): each name's place in the
registry, which repositories need which blob and which document, and what cannot be pushed.

:class:`PushPlan` turns the engine's :class:`~hatchway.transports.base.CopyPlan` and a
:class:`~hatchway.transports.registry.targets.PushTarget` into the names to write (``targets``
has the rule) and, for every blob (layer, config, artifact blob) and every document
(manifest, index, referrer), the repositories that need it in the order first needed, so
that the destination uploads a blob once and mounts it into the others.  A document is needed
wherever a name reaches it: an index's tag needs the index, its carried manifests and their
blobs in that repository; a referrer goes wherever its subject goes.  It refuses, before a
single request: several targets for one ``HOST/REPO:TAG``, one tag for two targets, an ID-only
image without a prefix, and uncompressed layers that the chosen compression cannot describe in
their image's manifest (zstd in a Docker schema 2 manifest).
"""

from __future__ import annotations

from hatchway.encode import LayerCompression, compressed_media_type, manifest_allows
from hatchway.errors import InvalidArgument
from hatchway.model import Compression, Descriptor, Layer, parse_index, parse_json_object
from hatchway.transports.base import (
    Artifact,
    BlobSource,
    CopyImage,
    CopyPlan,
    Document,
    ResolvedImage,
)
from hatchway.transports.registry.targets import (
    PushName,
    PushTarget,
    check_single,
    check_unique_tags,
    push_name,
)


class PushPlan:
    """The names of each target (``names``, by the digest of what a name points at), what each
    target reaches (``reach``), the repositories each blob is needed in (``blobs``, by
    digest), where each blob comes from (``sources``), the image of each config (``configs``)
    and the repositories each document goes to (:meth:`repositories`).  Raises
    :class:`~hatchway.errors.HatchwayError` for what cannot be pushed."""

    def __init__(self, target: PushTarget, plan: CopyPlan, compression: LayerCompression) -> None:
        self.plan = plan
        self.targets: dict[str, Descriptor] = {}
        self.names: dict[str, list[PushName]] = {}
        for name in plan.names:
            digest = name.target.digest
            self.targets.setdefault(digest, name.target)
            pushed = push_name(target, name.reference, name.image_id)
            known = self.names.setdefault(digest, [])
            if pushed not in known:
                known.append(pushed)
        check_single(target, len(self.targets))
        check_unique_tags([(n, t) for t, names in self.names.items() for n in names])
        self.images: dict[str, CopyImage] = {i.image.manifest_digest: i for i in plan.images}
        self.documents: dict[str, Document] = {d.digest: d for d in plan.documents}
        self.artifacts: dict[str, Artifact] = {a.digest: a for a in plan.artifacts}
        self.reach = {digest: self._reached(digest) for digest in self.targets}
        self._repositories: dict[str, list[str]] = {}
        for digest, reached in self.reach.items():
            repos = list(dict.fromkeys(n.repository for n in self.names[digest]))
            for d in reached:
                needed = self._repositories.setdefault(d, [])
                needed += [r for r in repos if r not in needed]
        for artifact in plan.artifacts:  # a referrer goes wherever its subject goes
            if artifact.subject is not None and artifact.digest not in self._repositories:
                self._repositories[artifact.digest] = list(self.repositories(artifact.subject))
        self.blobs: dict[str, list[str]] = {}
        self.sources: dict[str, BlobSource] = {}
        self.configs: dict[str, ResolvedImage] = {}
        for image in plan.images:
            repos = self.repositories(image.image.manifest_digest)
            self.configs.setdefault(image.image.manifest.config.digest, image.image)
            keys = (image.image.manifest.config.digest, *self._layer_keys(image))
            self._need(keys, repos, image.image.source)
        for artifact in plan.artifacts:
            self._need(
                [b.digest for b in artifact.blobs],
                self.repositories(artifact.digest),
                artifact.source,
            )
        self.compression = compression.compression
        for image in plan.images:
            self._check_compression(image)

    def repositories(self, digest: str) -> list[str]:
        """The repositories the document ``digest`` goes to (in the order first needed)."""
        return self._repositories.get(digest, [])

    def recompress(self, layer: Layer) -> bool:
        """Whether the layer is stored uncompressed and goes up compressed (an artifact's blob
        never is: it is pushed as it is)."""
        return (
            not layer.opaque
            and layer.compression is Compression.NONE
            and self.compression is not Compression.NONE
        )

    def children(self, digest: str) -> list[Descriptor]:
        """The children an index of the plan lists."""
        document = self.documents[digest]
        doc = parse_json_object(document.raw, f"index {digest}")
        return list(parse_index(doc, f"index {digest}"))

    def missing_children(self, digest: str) -> list[Descriptor]:
        """The children an index lists that the push does not carry (a partial index)."""
        carried = self.images.keys() | self.documents.keys() | self.artifacts.keys()
        return [c for c in self.children(digest) if c.digest not in carried]

    def _reached(self, digest: str) -> list[str]:
        """``digest`` and every document of the plan under it, outermost first."""
        reached = [digest]
        for current in reached:
            if current in self.documents:
                for child in self.children(current):
                    carried = (
                        child.digest in self.images
                        or child.digest in self.documents
                        or child.digest in self.artifacts
                    )
                    if carried and child.digest not in reached:
                        reached.append(child.digest)
        return reached

    def _need(
        self, blobs: list[str] | tuple[str, ...], repos: list[str], source: BlobSource
    ) -> None:
        for blob in blobs:
            needed = self.blobs.setdefault(blob, [])
            needed += [r for r in repos if r not in needed]
            self.sources.setdefault(blob, source)

    @staticmethod
    def _layer_keys(image: CopyImage) -> list[str]:
        return [layer.blob.digest for layer in image.image.layers]

    def _check_compression(self, image: CopyImage) -> None:
        raw = [la for la in image.image.layers if self.recompress(la)]
        if not raw:
            return
        kind = image.image.manifest.media_type
        mapped = all(compressed_media_type(la.blob.media_type, self.compression) for la in raw)
        if not mapped or not manifest_allows(kind, self.compression):
            raise InvalidArgument(
                "compress_layers",
                f"image {image.id.removeprefix('sha256:')[:12]} has uncompressed layers and a "
                f"{kind} manifest, which cannot describe {self.compression.value} layers; "
                "use --compress-layers gzip (or none)",
            )
