"""What operations return: plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass


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
