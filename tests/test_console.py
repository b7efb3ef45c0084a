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
    UploadAdvanced,
    UploadDone,
    UploadStarted,
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


def test_uploads_get_their_own_bars_and_an_uploading_total() -> None:
    renderer = RichProgress(Console(file=io.StringIO(), force_terminal=True, width=100))
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    with renderer:
        renderer(CopyStarted(images=1, layers=2, fetch_bytes=300))
        renderer(UploadStarted(a, 100))
        renderer(UploadAdvanced(a, 60))
        renderer(UploadStarted(b, 50))
        bars = {t.description.strip(): (t.completed, t.total) for t in renderer._progress.tasks}
        assert bars["uploading"] == (60, 150)
        assert bars[f"↑ {a[7:19]}"] == (60, 100) and bars[f"↑ {b[7:19]}"] == (0, 50)
        renderer(UploadAdvanced(a, 40))
        renderer(UploadDone(a, 100))
        renderer(UploadAdvanced(b, 50))
        renderer(UploadDone(b, 50))
        bars = {t.description.strip(): (t.completed, t.total) for t in renderer._progress.tasks}
        assert bars["uploading"] == (150, 150) and not any("↑" in d for d in bars)
