"""Progress events: what a copy (a save, a pull) reports while it runs.

The events are the same whatever the source and the destination.  A copy reports
:class:`CopyStarted` once its names are resolved, then per layer :class:`LayerStarted`,
:class:`LayerAdvanced` and :class:`LayerDone`, then — when the destination writes one output
at the end, as an archive does — :class:`WriteStarted` and :class:`WriteAdvanced`, and finally
:class:`CopyFinished`.  A destination that sends blobs elsewhere (a registry, for ``push``)
also reports each upload — :class:`UploadStarted`, :class:`UploadAdvanced`,
:class:`UploadDone` — while layers move and while it commits (configs); blobs it skips or
mounts are not uploads.

A layer is identified by ``digest``: its diffID when the destination keeps layers
uncompressed (an archive), the digest of the stored blob when it keeps them as the source
stores them (the local store).

The engine calls a progress callback (any ``Callable[[ProgressEvent], None]``) from the event
loop thread, never from a worker thread, so a callback may touch loop-bound state.  Callbacks
must be quick and must not raise.  The CLI's progress bars are one such callback; an
application can pass its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CopyStarted:
    """Names are resolved: ``layers`` distinct layers of ``fetch_bytes`` stored bytes to move."""

    images: int
    layers: int
    fetch_bytes: int


@dataclass(frozen=True, slots=True)
class LayerStarted:
    """A layer started moving (``size``: the stored, possibly compressed, blob size)."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class LayerAdvanced:
    """``advanced`` more stored bytes of a layer were read and verified."""

    digest: str
    advanced: int


@dataclass(frozen=True, slots=True)
class LayerDone:
    """A layer is verified and in place (or was already there); ``size`` is the size the
    destination holds (uncompressed for an archive, stored for the local store)."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class WriteStarted:
    """Every layer is in place; the output of exactly ``total`` bytes is being written."""

    total: int


@dataclass(frozen=True, slots=True)
class WriteAdvanced:
    """``advanced`` more bytes of the output were written."""

    advanced: int


@dataclass(frozen=True, slots=True)
class UploadStarted:
    """A blob started going up to the destination: ``size`` bytes (compressed, when the layer
    was compressed on the way), identified by the ``digest`` of what is sent."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadAdvanced:
    """``advanced`` more bytes of an upload were sent (bytes sent again after a broken
    connection are not counted twice)."""

    digest: str
    advanced: int


@dataclass(frozen=True, slots=True)
class UploadDone:
    """An upload is complete: the destination holds the blob under its digest."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class CopyFinished:
    """The copy is complete and visible: ``blobs_fetched`` layers of ``bytes_fetched`` stored
    bytes were read from their sources (layers the destination held already are not)."""

    blobs_fetched: int
    bytes_fetched: int


ProgressEvent = (
    CopyStarted
    | LayerStarted
    | LayerAdvanced
    | LayerDone
    | WriteStarted
    | WriteAdvanced
    | UploadStarted
    | UploadAdvanced
    | UploadDone
    | CopyFinished
)
ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(event: ProgressEvent) -> None:
    """The default callback: report nothing."""
