"""``docker-legacy``: the layout of Docker <= 1.9 (the seed's ``graph/export.go``).

One v1 directory per layer of every image's ancestry, plus ``repositories`` (mtime 0) when a
tag was recorded.  Docker 1.10-28 load it through their legacy path; Docker 29, containerd and
skopeo cannot (docs/formats.md, The docker-legacy layout).
"""

from __future__ import annotations

from hatchway.formats.plan import (
    ExportImage,
    Member,
    data_file,
    repositories,
    repositories_json,
    walk_order,
)
from hatchway.formats.v1 import v1_members


def plan(images: list[ExportImage], sizes: dict[str, int]) -> tuple[Member, ...]:
    v1 = v1_members(images, sizes)
    members = list(v1.members)
    repos = repositories(images, {cid: ids[-1] for cid, ids in v1.ids.items() if ids})
    if repos:
        members.append(data_file("repositories", repositories_json(repos), 0))
    return walk_order(members)
