"""The archive layouts hatchway writes, one pure planner per layout.

Each planner turns the images to export (in first-mention order) and the uncompressed size of
every layer into the ordered members of the archive.  See docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from hatchway.formats import docker, docker_1_10, docker_legacy
from hatchway.formats.docker import plan_stored
from hatchway.formats.plan import (
    ExportImage,
    Member,
    MemberKind,
    StoredArtifact,
    StoredExport,
    StoredImage,
    StoredName,
    archive_size,
    member_header,
)

__all__ = [
    "ArchiveFormat",
    "ExportImage",
    "Member",
    "MemberKind",
    "StoredArtifact",
    "StoredExport",
    "StoredImage",
    "StoredName",
    "archive_size",
    "member_header",
    "plan_archive",
    "plan_stored",
]


class ArchiveFormat(Enum):
    """``--format``: which ``docker save`` layout to write."""

    DOCKER = "docker"
    DOCKER_1_10 = "docker-1.10"
    DOCKER_LEGACY = "docker-legacy"


_PLANNERS: dict[
    ArchiveFormat, Callable[[list[ExportImage], dict[str, int]], tuple[Member, ...]]
] = {
    ArchiveFormat.DOCKER: docker.plan,
    ArchiveFormat.DOCKER_1_10: docker_1_10.plan,
    ArchiveFormat.DOCKER_LEGACY: docker_legacy.plan,
}


def plan_archive(
    fmt: ArchiveFormat, images: list[ExportImage], sizes: dict[str, int]
) -> tuple[Member, ...]:
    """The members of the archive, in the order they are written.

    ``sizes`` maps every layer's diffID to its uncompressed size.
    """
    return _PLANNERS[fmt](images, sizes)
