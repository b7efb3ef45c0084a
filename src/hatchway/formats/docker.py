"""``docker``: the layout of Docker >= 25, hatchway's default (docs/formats.md, The docker
layout).

An OCI image layout inside the tar (``oci-layout``, ``index.json``, ``blobs/sha256/``) for
containerd-based loaders, plus Docker's ``manifest.json`` and ``repositories`` for the classic
loader.  Layers are stored uncompressed under their diffID; each image gets a fresh OCI
manifest describing exactly those uncompressed blobs, so every descriptor size is exact.
"""

from __future__ import annotations

from typing import Any

from hatchway.formats.plan import (
    ExportImage,
    Member,
    StoredExport,
    StoredImage,
    compact_json,
    data_file,
    directory,
    layer_file,
    repo_tags,
    repositories,
    repositories_json,
    walk_order,
)
from hatchway.model import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    hex_of,
    sha256_digest,
)
from hatchway.oci_layout import (
    INDEX_NAME,
    OCI_LAYOUT_BYTES,
    index_document,
    index_entry,
    referrer_entry,
)


def image_manifest(image: ExportImage, sizes: dict[str, int]) -> bytes:
    """The OCI manifest written for ``image``: its config and its uncompressed layers."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": image.config.id,
            "size": len(image.config.raw),
        },
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": sizes[d]} for d in image.diff_ids],
    }
    return compact_json(doc)


def plan(images: list[ExportImage], sizes: dict[str, int]) -> tuple[Member, ...]:
    blobs: dict[str, Member] = {}

    def blob(digest: str, member: Member) -> None:
        blobs.setdefault(digest, member)

    index: list[dict[str, Any]] = []
    manifest_json: list[dict[str, Any]] = []
    for image in images:
        created = image.config.created
        for diff_id in image.diff_ids:
            blob(diff_id, layer_file(_path(diff_id), diff_id, sizes[diff_id], created))
        blob(image.config.id, data_file(_path(image.config.id), image.config.raw, created))
        manifest = image_manifest(image, sizes)
        digest = sha256_digest(manifest)
        blob(digest, data_file(_path(digest), manifest, 0))
        descriptor = Descriptor(OCI_MANIFEST, digest, len(manifest))
        for ref in image.tags or (None,):
            index.append(index_entry(OCI_MANIFEST, descriptor, ref))
        manifest_json.append(
            {
                "Config": _path(image.config.id),
                "RepoTags": repo_tags(image),
                "Layers": [_path(d) for d in image.diff_ids],
            }
        )
    members = [directory("blobs", 0), directory("blobs/sha256", 0), *blobs.values()]
    members += [
        data_file(INDEX_NAME, compact_json(index_document(index), newline=True), 0),
        data_file("manifest.json", compact_json(manifest_json, newline=True), 0),
        data_file("oci-layout", OCI_LAYOUT_BYTES, 0),
    ]
    top = {image.config.id: hex_of(image.diff_ids[-1]) for image in images if image.diff_ids}
    repos = repositories(images, top)
    if repos:
        members.append(data_file("repositories", repositories_json(repos), 0))
    return walk_order(members)


def _path(digest: str) -> str:
    return f"blobs/sha256/{hex_of(digest)}"


def plan_stored(export: StoredExport) -> tuple[Member, ...]:
    """The ``docker`` layout holding images exactly as their source stores them: the original
    index, manifest and config bytes and the stored (usually compressed) layer blobs, each
    under its own digest, so that every digest a user pinned is the digest in the archive
    (docs/formats.md, "Digests kept").

    ``index.json`` names what each name points at — an index or a manifest — and lists
    referrers as unnamed entries; ``manifest.json`` lists each image's config and stored layer
    blobs (Docker's classic loader decompresses them), with the tags recorded for it; the
    ``repositories`` value of a tag is its image's top layer blob.  A body member's ``layer``
    is the blob's digest (what the engine keyed it by).
    """
    blobs: dict[str, Member] = {}

    def blob(digest: str, member: Member) -> None:
        blobs.setdefault(digest, member)

    # One manifest.json entry per image ID, as Docker's classic loader knows images: two
    # manifests of one config (the same layers, compressed two ways) are one image there.
    by_id: dict[str, tuple[StoredImage, list[str]]] = {}
    repos: dict[str, dict[str, str]] = {}
    for image in export.images:
        created = image.config.created
        for layer in image.layers:
            blob(layer.digest, layer_file(_path(layer.digest), layer.digest, layer.size, created))
        blob(image.config.id, data_file(_path(image.config.id), image.config.raw, created))
        blob(image.manifest.digest, data_file(_path(image.manifest.digest), image.manifest_raw, 0))
        first, tags = by_id.setdefault(image.config.id, (image, []))
        tags += [t for t in (ref.recorded_tag() for ref in image.tags) if t not in tags]
        if first.layers:
            for ref in image.tags:
                top = hex_of(first.layers[-1].digest)
                repos.setdefault(ref.familiar_name, {})[ref.tag or "latest"] = top
    manifest_json = [
        {
            "Config": _path(image.config.id),
            "RepoTags": tags or None,
            "Layers": [_path(layer.digest) for layer in image.layers],
        }
        for image, tags in by_id.values()
    ]
    for descriptor, raw in export.documents:
        blob(descriptor.digest, data_file(_path(descriptor.digest), raw, 0))
    index = [index_entry(n.target.media_type, n.target, n.reference) for n in export.names]
    for artifact in export.artifacts:
        blob(artifact.manifest.digest, data_file(_path(artifact.manifest.digest), artifact.raw, 0))
        for part in artifact.blobs:
            blob(part.digest, layer_file(_path(part.digest), part.digest, part.size, 0))
        if artifact.entry:
            index.append(
                referrer_entry(
                    artifact.manifest.media_type,
                    artifact.manifest,
                    artifact.subject,
                    artifact.tag,
                    artifact.artifact_type,
                )
            )
    members = [directory("blobs", 0), directory("blobs/sha256", 0), *blobs.values()]
    members += [
        data_file(INDEX_NAME, compact_json(index_document(index), newline=True), 0),
        data_file("manifest.json", compact_json(manifest_json, newline=True), 0),
        data_file("oci-layout", OCI_LAYOUT_BYTES, 0),
    ]
    if repos:
        members.append(data_file("repositories", repositories_json(repos), 0))
    return walk_order(members)
