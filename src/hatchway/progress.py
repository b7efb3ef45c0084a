"""Progress events: what a save reports while it runs.

The engine calls a progress callback (any ``Callable[[ProgressEvent], None]``) from the event
loop thread, never from a worker thread, so a callback may touch loop-bound state.  Callbacks
must be quick and must not raise.  The CLI's rich renderer (``hatchway.console``) is one such
callback; an application can pass its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SaveStarted:
    """Names are resolved: ``layers`` distinct layers of ``fetch_bytes`` stored bytes to stage."""

    images: int
    layers: int
    fetch_bytes: int


@dataclass(frozen=True, slots=True)
class LayerStarted:
    """A layer started staging (``size``: the stored, possibly compressed, blob size)."""

    diff_id: str
    size: int


@dataclass(frozen=True, slots=True)
class LayerAdvanced:
    """``advanced`` more stored bytes of a layer were read and verified."""

    diff_id: str
    advanced: int


@dataclass(frozen=True, slots=True)
class LayerStaged:
    """A layer is verified and staged; ``size`` is its uncompressed size."""

    diff_id: str
    size: int


@dataclass(frozen=True, slots=True)
class WriteStarted:
    """Every layer is staged; the archive of exactly ``total`` bytes is being written."""

    total: int


@dataclass(frozen=True, slots=True)
class WriteAdvanced:
    advanced: int


@dataclass(frozen=True, slots=True)
class SaveFinished:
    bytes_written: int


ProgressEvent = (
    SaveStarted
    | LayerStarted
    | LayerAdvanced
    | LayerStaged
    | WriteStarted
    | WriteAdvanced
    | SaveFinished
)
ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(event: ProgressEvent) -> None:
    """The default callback: report nothing."""
