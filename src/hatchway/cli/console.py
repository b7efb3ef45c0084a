"""What the CLI draws: progress bars for :mod:`hatchway.progress` events, tables, sizes.

The progress renderer shows one overall bar (stored bytes moved against the known total,
then archive bytes written against the exact archive size) and one bar per layer in flight;
when blobs are uploaded (``push``), an "uploading" bar (bytes sent against the blobs started so
far) and one bar per upload in flight.
It draws on stderr only; the CLI uses it only when stderr is a terminal and ``-q`` was not
given.  rich is imported by this module alone, and only when bars are drawn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from hatchway import (
    CopyFinished,
    CopyStarted,
    LayerAdvanced,
    LayerDone,
    LayerStarted,
    ProgressEvent,
    UploadAdvanced,
    UploadDone,
    UploadStarted,
    WriteAdvanced,
    WriteStarted,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID


class RichProgress:
    """A progress callback that renders bars on ``console`` (use as a context manager)."""

    def __init__(self, console: Console, label: str = "moving") -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._label = label
        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._overall: TaskID | None = None
        self._uploading: TaskID | None = None
        self._upload_total = 0
        self._uploads: dict[str, TaskID] = {}
        self._layers: dict[str, TaskID] = {}
        self._remaining: dict[str, int] = {}  # stored bytes of each layer not yet reported

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop drawing and clear the bars (idempotent)."""
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        p = self._progress
        match event:
            case CopyStarted(layers=layers, fetch_bytes=total):
                label = f"{self._label} {layers} layer{'s' * (layers != 1)}"
                self._overall = p.add_task(label, total=total)
            case LayerStarted(digest=digest, size=size):
                self._layers[digest] = p.add_task(f"  {digest[7:19]}", total=size)
                self._remaining[digest] = size
            case LayerAdvanced(digest=digest, advanced=n):
                if digest in self._layers:
                    p.advance(self._layers[digest], n)
                self._remaining[digest] = self._remaining.get(digest, 0) - n
                if self._overall is not None:
                    p.advance(self._overall, n)
            case LayerDone(digest=digest):
                task = self._layers.pop(digest, None)
                if task is not None:
                    p.remove_task(task)
                # A layer verified later (while copied) or already present is done here.
                rest = self._remaining.pop(digest, 0)
                if rest > 0 and self._overall is not None:
                    p.advance(self._overall, rest)
            case WriteStarted(total=total):
                if self._overall is not None:
                    p.remove_task(self._overall)
                self._overall = p.add_task("writing archive", total=total)
            case WriteAdvanced(advanced=n):
                if self._overall is not None:
                    p.advance(self._overall, n)
            case UploadStarted(digest=digest, size=size):
                self._upload_total += size
                if self._uploading is None:
                    self._uploading = p.add_task("uploading", total=self._upload_total)
                else:
                    p.update(self._uploading, total=self._upload_total)
                self._uploads[digest] = p.add_task(f"  ↑ {digest[7:19]}", total=size)
            case UploadAdvanced(digest=digest, advanced=n):
                if digest in self._uploads:
                    p.advance(self._uploads[digest], n)
                if self._uploading is not None:
                    p.advance(self._uploading, n)
            case UploadDone(digest=digest):
                task = self._uploads.pop(digest, None)
                if task is not None:
                    p.remove_task(task)
            case CopyFinished():
                pass


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns three spaces apart (as ``docker images`` prints them)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def human_size(n: float) -> str:
    """Sizes as Docker prints them: decimal units, three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    raise AssertionError("unreachable")


def ago(then: int, now: float | None = None) -> str:
    """How long ago the epoch time ``then`` was, as Docker words it (``N/A`` for 0)."""
    if then <= 0:
        return "N/A"
    seconds = max(0, int((time.time() if now is None else now) - then))
    for unit, span in (
        ("year", 31536000),
        ("month", 2592000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if seconds >= span:
            count = seconds // span
            return f"{count} {unit}{'s' * (count != 1)} ago"
    return "Less than a minute ago"
