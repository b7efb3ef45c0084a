"""``docker``: the layout of Docker >= 25, hatchway's default (FORMATS.md §2c).

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
    compact_json,
    data_file,
    directory,
    layer_file,
    repo_tags,
    repositories,
    repositories_json,
    walk_order,
)
from hatchway.model import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, hex_of, sha256_digest

OCI_LAYOUT_BYTES = b'{"imageLayoutVersion": "1.0.0"}'
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


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
        descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}
        if image.tags:
            for ref in image.tags:
                annotations = {
                    IMAGE_NAME_ANNOTATION: ref.qualified_tag(),
                    REF_NAME_ANNOTATION: ref.tag or "latest",
                }
                index.append(dict(descriptor, annotations=annotations))
        else:
            index.append(descriptor)
        manifest_json.append(
            {
                "Config": _path(image.config.id),
                "RepoTags": repo_tags(image),
                "Layers": [_path(d) for d in image.diff_ids],
            }
        )
    members = [directory("blobs", 0), directory("blobs/sha256", 0), *blobs.values()]
    index_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
    members += [
        data_file("index.json", compact_json(index_doc, newline=True), 0),
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
