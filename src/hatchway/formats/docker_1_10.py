"""``docker-1.10``: the layout of Docker 1.10-24, also skopeo's and podman's docker-archive.

The legacy v1 directories, plus each config as ``<config-hex>.json`` (original bytes) and a
``manifest.json`` (mtime 0) listing each image's config, tags and layers — each layer by the
file that holds its bytes, never by a symlink (docs/formats.md, The docker-1.10 layout).
"""

from __future__ import annotations

from hatchway.formats.plan import (
    ExportImage,
    Member,
    compact_json,
    data_file,
    repo_tags,
    repositories,
    repositories_json,
    walk_order,
)
from hatchway.formats.v1 import config_name, v1_members


def plan(images: list[ExportImage], sizes: dict[str, int]) -> tuple[Member, ...]:
    v1 = v1_members(images, sizes)
    members = list(v1.members)
    manifest = []
    for image in images:
        members.append(data_file(config_name(image), image.config.raw, image.config.created))
        manifest.append(
            {
                "Config": config_name(image),
                "RepoTags": repo_tags(image),
                "Layers": v1.layer_paths(image),
            }
        )
    members.append(data_file("manifest.json", compact_json(manifest, newline=True), 0))
    repos = repositories(images, {cid: ids[-1] for cid, ids in v1.ids.items() if ids})
    if repos:
        members.append(data_file("repositories", repositories_json(repos), 0))
    return walk_order(members)
