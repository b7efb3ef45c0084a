"""Archive plans: the ordered list of members an archive consists of, before any bytes move.

Pure.  A plan is what the ordered writer serialises: directories, small files whose bytes are
already known (JSON documents), symlinks, and layer bodies that name a staged layer by its
diffID.  Plans are built only after every layer is staged, because the uncompressed sizes
appear in tar headers and in the OCI manifests of the ``docker`` layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hatchway import tarstream
from hatchway.model import Descriptor, ImageConfig, Layer
from hatchway.reference import Reference


class MemberKind(Enum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class Member:
    """One archive member.  A ``FILE`` has either ``data`` or a ``layer`` (a diffID) body."""

    name: str
    kind: MemberKind
    mtime: int
    data: bytes | None = None
    layer: str | None = None
    size: int = 0
    linkname: str = ""

    def __post_init__(self) -> None:
        if self.name.startswith("/") or ".." in self.name.split("/") or not self.name:
            raise ValueError(f"unsafe member name {self.name!r}")
        if self.kind is MemberKind.FILE and (self.data is None) == (self.layer is None):
            raise ValueError(f"{self.name}: a file has exactly one of data or layer")
        if self.data is not None and len(self.data) != self.size:
            raise ValueError(f"{self.name}: size does not match data")


def directory(name: str, mtime: int) -> Member:
    return Member(name.rstrip("/"), MemberKind.DIRECTORY, mtime)


def data_file(name: str, data: bytes, mtime: int) -> Member:
    return Member(name, MemberKind.FILE, mtime, data=data, size=len(data))


def layer_file(name: str, diff_id: str, size: int, mtime: int) -> Member:
    return Member(name, MemberKind.FILE, mtime, layer=diff_id, size=size)


def symlink(name: str, target: str, mtime: int) -> Member:
    return Member(name, MemberKind.SYMLINK, mtime, linkname=target)


@dataclass(frozen=True, slots=True)
class ExportImage:
    """One image to export and the tags recorded for it, in first-mention order."""

    config: ImageConfig
    layers: tuple[Layer, ...]
    tags: tuple[Reference, ...] = field(default=())

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return self.config.diff_ids


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image to export as it is stored: its manifest's descriptor and bytes, its config,
    its stored (compressed, as the case may be) layer blobs, and the tags recorded for it."""

    manifest: Descriptor
    manifest_raw: bytes
    config: ImageConfig
    layers: tuple[Descriptor, ...]
    tags: tuple[Reference, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """A manifest carried as it is that is no image (a referrer, an index's attestation):
    its descriptor and bytes and its blobs; ``entry`` says whether ``index.json`` lists it
    (a referrer) or an index it belongs to does (an index's child); ``subject``, ``tag`` and
    ``artifact_type`` go into that entry."""

    manifest: Descriptor
    raw: bytes
    blobs: tuple[Descriptor, ...]
    entry: bool
    subject: str | None = None
    tag: str | None = None
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class StoredName:
    """A name recorded in ``index.json``: the reference (``None``: an unnamed entry) and the
    index or manifest it points at."""

    reference: Reference | None
    target: Descriptor


@dataclass(frozen=True, slots=True)
class StoredExport:
    """Everything an archive holds when images are written as stored: the images, the
    indexes they come through (descriptor and bytes), the artifacts and the names."""

    images: tuple[StoredImage, ...]
    documents: tuple[tuple[Descriptor, bytes], ...]
    artifacts: tuple[StoredArtifact, ...]
    names: tuple[StoredName, ...]


def walk_order(members: Iterable[Member]) -> tuple[Member, ...]:
    """Sort members as a lexical directory walk would (Go's ``filepath.Walk``, which is how
    Docker tars its export directory): siblings by name, a directory before its children."""
    # Comparing names with "/" made the lowest character orders them as tuples of their
    # components would (no member name holds a NUL), and string comparisons are what keeps
    # this sort of tens of thousands of members short: it holds the GIL throughout.
    ordered = sorted(members, key=lambda m: m.name.replace("/", "\0"))
    names = [m.name for m in ordered]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member names in plan")
    return tuple(ordered)


def compact_json(obj: Any, *, sort_keys: bool = False, newline: bool = False) -> bytes:
    """JSON as Go's ``encoding/json`` writes it: compact, UTF-8 (``Encoder`` adds ``\\n``)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    return (text + ("\n" if newline else "")).encode()


def repositories_json(entries: Mapping[str, Mapping[str, str]]) -> bytes:
    """The legacy ``repositories`` file: ``{"repo":{"tag":"<id>"}}``, keys sorted, ``\\n``."""
    return compact_json(entries, sort_keys=True, newline=True)


def repositories(
    images: Iterable[ExportImage], top_id: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """Map each recorded tag's repository and tag to the id ``top_id`` gives its image
    (images missing from ``top_id`` are left out)."""
    repos: dict[str, dict[str, str]] = {}
    for image in images:
        if image.config.id not in top_id:  # an image without layers has no top layer
            continue
        for ref in image.tags:
            repos.setdefault(ref.familiar_name, {})[ref.tag or "latest"] = top_id[image.config.id]
    return repos


def repo_tags(image: ExportImage) -> list[str] | None:
    """``RepoTags`` of a ``manifest.json`` entry: ``null`` for an untagged image."""
    return [ref.recorded_tag() for ref in image.tags] or None


def member_header(member: Member) -> bytes:
    """The tar header bytes of ``member``."""
    if member.kind is MemberKind.DIRECTORY:
        return tarstream.directory_header(member.name, member.mtime)
    if member.kind is MemberKind.SYMLINK:
        return tarstream.symlink_header(member.name, member.linkname, member.mtime)
    return tarstream.file_header(member.name, member.size, member.mtime)


def archive_size(members: Sequence[Member]) -> int:
    """The exact size of the archive a plan produces."""
    body = sum(tarstream.member_size(len(member_header(m)), m.size) for m in members)
    return body + len(tarstream.END_OF_ARCHIVE)
