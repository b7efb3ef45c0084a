"""The progress renderer: bars add up, including layers verified while they are copied."""

from __future__ import annotations

import io

from rich.console import Console

from hatchway.cli.console import RichProgress
from hatchway.progress import (
    CopyFinished,
    CopyStarted,
    LayerAdvanced,
    LayerDone,
    LayerStarted,
    WriteAdvanced,
    WriteStarted,
)


def test_staging_bar_completes_and_writing_bar_follows() -> None:
    renderer = RichProgress(Console(file=io.StringIO(), force_terminal=True, width=100))
    with renderer:
        renderer(CopyStarted(images=1, layers=2, fetch_bytes=300))
        renderer(LayerStarted("sha256:" + "a" * 64, 100))
        renderer(LayerAdvanced("sha256:" + "a" * 64, 100))
        renderer(LayerDone("sha256:" + "a" * 64, 250))
        renderer(LayerStarted("sha256:" + "b" * 64, 200))  # verified later, while copied
        renderer(LayerDone("sha256:" + "b" * 64, 200))
        tasks = renderer._progress.tasks
        assert [(t.completed, t.total) for t in tasks] == [(300, 300)]
        renderer(WriteStarted(total=1024))
        renderer(WriteAdvanced(1024))
        renderer(CopyFinished(2, 300))
        assert [(t.description, t.completed) for t in renderer._progress.tasks] == [
            ("writing archive", 1024)
        ]
