"""What operations return: plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SavedImage:
    """One image in a finished archive: its ID and the tags recorded for it."""

    id: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save wrote: the images, the number of distinct layers, the bytes written to the
    output (compressed, when it was compressed) and the size of the tar archive itself."""

    images: tuple[SavedImage, ...]
    layers: int
    bytes_written: int
    archive_size: int = 0


@dataclass(frozen=True, slots=True)
class PulledImage:
    """One name a pull stored: as written into ``index.json`` (``host/repo:tag`` or
    ``host/repo@sha256:...``), the manifest digest and the image ID."""

    name: str
    digest: str
    id: str


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull did: the names stored, and how many layer blobs and bytes it downloaded
    (blobs the store already held intact are not downloaded again)."""

    images: tuple[PulledImage, ...]
    blobs_fetched: int
    bytes_fetched: int


@dataclass(frozen=True, slots=True)
class PushedImage:
    """One name a push wrote: ``HOST/REPO:TAG`` (or ``HOST/REPO@sha256:...`` for an image
    pushed by digest), the digest of the manifest pushed, and the image ID."""

    name: str
    digest: str
    id: str
    #: Whether the name points at the digest it had in the source (see ``PushResult.notes``).
    kept: bool = True


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push did: the names written, in the order given, and the blobs (layers and
    configs) it uploaded, mounted from another repository of the registry, or skipped because
    the repository had them — per repository, so a base layer uploaded once and mounted into
    seven other repositories counts 1 upload and 7 mounts."""

    images: tuple[PushedImage, ...]
    blobs_uploaded: int
    bytes_uploaded: int
    blobs_mounted: int
    blobs_skipped: int
    #: What could not be kept as the source had it, one line each (a digest, an index).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One name a load stored: as written into ``index.json`` (``None`` for an image the
    archive records no name for, stored unnamed and reachable by its ID), the manifest digest
    and the image ID."""

    name: str | None
    digest: str
    id: str


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did: the names stored, and how many layer blobs and bytes it copied
    into the store (blobs the store already held intact are not copied again)."""

    images: tuple[LoadedImage, ...]
    blobs_stored: int
    bytes_stored: int


@dataclass(frozen=True, slots=True)
class VerifiedImage:
    """One image found in a bundle: its ID, its recorded names and its layer count."""

    id: str
    tags: tuple[str, ...]
    layers: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify`` found in one archive.

    ``ok`` is true when every check passed; otherwise ``problem`` is the first failure (one
    line) and ``member`` the member it names (``None`` for the tar as a whole).  ``layouts``
    lists what the archive carries (``manifest.json``, ``index.json``, ``repositories``, ``v1``
    for legacy directories); ``compression`` how the file was compressed; ``size`` the tar's
    size; ``layers`` the distinct layers and ``layer_bytes`` their uncompressed bytes.
    """

    archive: str
    ok: bool
    problem: str | None = None
    member: str | None = None
    compression: str = "none"
    layouts: tuple[str, ...] = ()
    members: int = 0
    size: int = 0
    images: tuple[VerifiedImage, ...] = ()
    tags: int = 0
    layers: int = 0
    layer_bytes: int = 0
    checks: tuple[str, ...] = field(default=())
