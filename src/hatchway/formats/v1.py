"""Docker's v1 layer-image directories (``<id>/VERSION``, ``<id>/json``, ``<id>/layer.tar``).

Pure.  Used by the ``docker-legacy`` and ``docker-1.10`` layouts.  Each layer of an image gets
a v1 image whose id hashes, like Docker's ``v1.CreateID``, a JSON of its v1 fields plus the
layer's chain id and its parent's v1 id, so an id depends on the whole chain below it.  The
top layer's v1 JSON is the image config (without ``rootfs`` and ``history``), so two images
that share every layer but differ in config still get distinct top directories.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hatchway.formats.plan import (
    ExportImage,
    Member,
    compact_json,
    data_file,
    directory,
    layer_file,
    symlink,
)
from hatchway.model import chain_ids, hex_of

VERSION_BYTES = b"1.0"
_EPOCH_CREATED = "1970-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class V1Layer:
    """One v1 directory: its id, the JSON it holds, and the layer content it carries."""

    id: str
    json: bytes
    diff_id: str
    mtime: int


def v1_layers(image: ExportImage) -> list[V1Layer]:
    """The v1 directories of ``image``, base first."""
    out: list[V1Layer] = []
    parent: str | None = None
    chains = chain_ids(image.diff_ids)
    top = len(chains) - 1
    for i, (diff_id, chain) in enumerate(zip(image.diff_ids, chains, strict=True)):
        if i == top:
            fields = {
                k: v
                for k, v in image.config.data.items()
                if k not in ("rootfs", "history", "id", "parent")
            }
        else:
            fields = {"created": _EPOCH_CREATED}
            if image.config.os:
                fields["os"] = image.config.os
        id_fields = dict(fields, layer_id=chain)
        if parent is not None:
            id_fields["parent"] = "sha256:" + parent
        v1_id = hashlib.sha256(compact_json(id_fields, sort_keys=True)).hexdigest()
        body = dict(fields, id=v1_id)
        if parent is not None:
            body["parent"] = parent
        out.append(
            V1Layer(v1_id, compact_json(body, sort_keys=True), diff_id, image.config.created)
        )
        parent = v1_id
    return out


@dataclass(frozen=True, slots=True)
class V1Directories:
    """The v1 directories of an archive: their members, each image's v1 ids (base first),
    and per diffID the ``<id>/layer.tar`` that holds its bytes (every other directory with
    that content has a symlink to it)."""

    members: list[Member]
    ids: dict[str, list[str]]
    content: dict[str, str]

    def layer_paths(self, image: ExportImage) -> list[str]:
        """What ``manifest.json`` lists as ``Layers`` for ``image``: the file that holds each
        layer's bytes, never a symlink.  A symlinked ``layer.tar`` would load in Docker, but
        containers/image (podman, ``skopeo copy`` into containers-storage) sizes a layer by
        the tar header of the path the manifest names — 0 for a symlink — and then fails with
        "blob size mismatch", wherever the real file is placed."""
        return [self.content[diff_id] for diff_id in image.diff_ids]


def v1_members(images: list[ExportImage], sizes: dict[str, int]) -> V1Directories:
    """The members of every image's v1 directories, each directory once, each layer's bytes
    once: in the directory with the lowest id, which comes first in the archive's walk order;
    later copies are symlinks ``../<id>/layer.tar`` to it."""
    dirs: dict[str, V1Layer] = {}
    per_image: dict[str, list[str]] = {}
    for image in images:
        layers = v1_layers(image)
        per_image[image.config.id] = [layer.id for layer in layers]
        for layer in layers:
            dirs.setdefault(layer.id, layer)
    holder: dict[str, str] = {}
    for v1_id in sorted(dirs):
        holder.setdefault(dirs[v1_id].diff_id, v1_id)
    members: list[Member] = []
    for v1_id, layer in dirs.items():
        members += [
            directory(v1_id, layer.mtime),
            data_file(f"{v1_id}/VERSION", VERSION_BYTES, layer.mtime),
            data_file(f"{v1_id}/json", layer.json, layer.mtime),
        ]
        first = holder[layer.diff_id]
        if first == v1_id:
            members.append(
                layer_file(f"{v1_id}/layer.tar", layer.diff_id, sizes[layer.diff_id], layer.mtime)
            )
        else:
            members.append(symlink(f"{v1_id}/layer.tar", f"../{first}/layer.tar", layer.mtime))
    content = {diff_id: f"{v1_id}/layer.tar" for diff_id, v1_id in holder.items()}
    return V1Directories(members, per_image, content)


def config_name(image: ExportImage) -> str:
    return hex_of(image.config.id) + ".json"
