"""The CLI's progress display: a rich renderer for :mod:`hatchway.progress` events.

One overall bar (stored bytes staged against the known total, then archive bytes written
against the exact archive size) and one bar per layer in flight.  It draws on stderr only;
the CLI uses it only when stderr is a terminal and ``-q`` was not given.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hatchway.progress import (
    LayerAdvanced,
    LayerStaged,
    LayerStarted,
    ProgressEvent,
    SaveFinished,
    SaveStarted,
    WriteAdvanced,
    WriteStarted,
)


class RichProgress:
    """A progress callback that renders bars on ``console`` (use as a context manager)."""

    def __init__(self, console: Console) -> None:
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
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        p = self._progress
        match event:
            case SaveStarted(images=images, layers=layers, fetch_bytes=total):
                label = f"staging {layers} layer{'s' * (layers != 1)}"
                self._overall = p.add_task(label, total=total)
                del images
            case LayerStarted(diff_id=diff_id, size=size):
                self._layers[diff_id] = p.add_task(f"  {diff_id[7:19]}", total=size)
                self._remaining[diff_id] = size
            case LayerAdvanced(diff_id=diff_id, advanced=n):
                if diff_id in self._layers:
                    p.advance(self._layers[diff_id], n)
                self._remaining[diff_id] = self._remaining.get(diff_id, 0) - n
                if self._overall is not None:
                    p.advance(self._overall, n)
            case LayerStaged(diff_id=diff_id):
                task = self._layers.pop(diff_id, None)
                if task is not None:
                    p.remove_task(task)
                # A layer verified later, while it is copied, is done as far as staging goes.
                rest = self._remaining.pop(diff_id, 0)
                if rest > 0 and self._overall is not None:
                    p.advance(self._overall, rest)
            case WriteStarted(total=total):
                if self._overall is not None:
                    p.remove_task(self._overall)
                self._overall = p.add_task("writing archive", total=total)
            case WriteAdvanced(advanced=n):
                if self._overall is not None:
                    p.advance(self._overall, n)
            case SaveFinished():
                pass
