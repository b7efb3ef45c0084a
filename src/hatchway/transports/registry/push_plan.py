"""What a push does, decided before anything is sent (pure): each image's names in the
registry, which repositories need which blob, and what cannot be pushed at all.

:class:`PushPlan` turns the engine's :class:`~hatchway.transports.base.CopyPlan` and a
:class:`~hatchway.transports.registry.targets.PushTarget` into the names to write (``targets``
has the rule) and, for every blob — layer or config — the repositories that need it in the
order first needed, so that the destination uploads a blob once and mounts it into the others.
It refuses, before a single request: several images for one ``HOST/REPO:TAG``, one tag for two
images, an ID-only image without a prefix, and uncompressed layers that the chosen compression
cannot describe in their image's manifest (zstd in a Docker schema 2 manifest).
"""

from __future__ import annotations

from hatchway.encode import LayerCompression, compressed_media_type, manifest_allows
from hatchway.errors import InvalidArgument
from hatchway.model import Compression, Layer
from hatchway.transports.base import BlobSource, CopyImage, CopyPlan, ResolvedImage
from hatchway.transports.registry.targets import (
    PushName,
    PushTarget,
    check_single,
    check_unique_tags,
    push_name,
)


class PushPlan:
    """Each image's names (``names``, by image ID), the repositories each blob is needed in
    (``blobs``, by digest: layers by their stored digest, and configs), where each blob comes
    from (``sources``), and the image of each config (``configs``).  Raises
    :class:`~hatchway.errors.HatchwayError` for what cannot be pushed."""

    def __init__(self, target: PushTarget, plan: CopyPlan, compression: LayerCompression) -> None:
        check_single(target, len(plan.images))
        self.images = {i.id: i for i in plan.images}
        self.names: dict[str, list[PushName]] = {i.id: [] for i in plan.images}
        for name in plan.names:
            pushed = push_name(target, name.reference, name.image_id)
            if pushed not in self.names[name.image_id]:
                self.names[name.image_id].append(pushed)
        check_unique_tags([(n, i) for i, names in self.names.items() for n in names])
        self.blobs: dict[str, list[str]] = {}
        self.sources: dict[str, BlobSource] = {}
        self.configs: dict[str, ResolvedImage] = {
            i.image.manifest.config.digest: i.image for i in plan.images
        }
        for image in plan.images:
            repos = self.repositories(image.id)
            for blob in (image.image.manifest.config.digest, *self._layer_keys(image)):
                needed = self.blobs.setdefault(blob, [])
                needed += [r for r in repos if r not in needed]
                self.sources.setdefault(blob, image.image.source)
        self.compression = compression.compression
        for image in plan.images:
            self._check_compression(image)

    def repositories(self, image_id: str) -> list[str]:
        return list(dict.fromkeys(n.repository for n in self.names[image_id]))

    def recompress(self, layer: Layer) -> bool:
        """Whether the layer is stored uncompressed and goes up compressed."""
        return layer.compression is Compression.NONE and self.compression is not Compression.NONE

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
