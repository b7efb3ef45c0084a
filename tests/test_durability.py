"""Durable means across a power loss: a file's bytes are flushed before it is renamed into
place, and its directory after the rename (only that makes the new name itself durable).
``--fsync`` promises that for ``-o FILE``; the store promises it for every blob and
``index.json`` a ``load`` or ``pull`` writes.

A power loss cannot be staged in a test, so these tests record the ``os.fsync`` and
``os.replace`` calls (a recording wrapper around the real calls: the one fake here) and check
their order.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hatchway
from tests.support import Family


class Calls:
    """``("fsync", path)`` and ``("replace", source, target)`` in the order they happened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, ...]] = []
        fsync, replace = os.fsync, os.replace

        def recorded_fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            fsync(fd)

        def recorded_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            replace(src, dst)
            self.events.append(("replace", os.fspath(src), os.fspath(dst)))

        monkeypatch.setattr(os, "fsync", recorded_fsync)
        monkeypatch.setattr(os, "replace", recorded_replace)

    def index(self, *event: str) -> int:
        return self.events.index(event)

    def last_replace_into(self, directory: Path) -> int:
        return max(
            i
            for i, e in enumerate(self.events)
            if e[0] == "replace" and Path(e[2]).parent == directory
        )


@pytest.mark.anyio
async def test_fsync_flushes_the_archive_then_its_directory(
    family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.tar"
    calls = Calls(monkeypatch)
    await hatchway.save(["app:1.0"], out, store=family.root, fsync=True)
    renamed = next(i for i, e in enumerate(calls.events) if e[0] == "replace" and e[2] == str(out))
    temp = calls.events[renamed][1]
    assert calls.index("fsync", temp) < renamed < calls.index("fsync", str(out_dir))


@pytest.mark.anyio
async def test_without_fsync_nothing_is_flushed(
    family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    await hatchway.save(["app:1.0"], tmp_path / "o.tar", store=family.root)
    assert [e for e in calls.events if e[0] == "fsync"] == []


@pytest.mark.anyio
async def test_a_load_is_durable_before_it_returns(
    family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every blob flushed before its rename; the blob directory before ``index.json``
    changes (an entry must never outlive the blobs it names); ``index.json`` and the store's
    directory after."""
    archive = tmp_path / "app.tar"
    await hatchway.save(["app", "tools"], archive, store=family.root)
    store = tmp_path / "new-store"
    calls = Calls(monkeypatch)
    await hatchway.load([archive], store=store)
    blobs = store / "blobs" / "sha256"
    index = str(store / "index.json")
    for i, event in enumerate(calls.events):
        if event[0] == "replace":
            assert calls.index("fsync", event[1]) < i, event  # its bytes first
    entries = max(i for i, e in enumerate(calls.events) if e[:1] == ("replace",) and e[2] == index)
    assert calls.last_replace_into(blobs) < calls.index("fsync", str(blobs)) < entries
    synced_root = [i for i, e in enumerate(calls.events) if e == ("fsync", str(store))]
    assert synced_root and synced_root[-1] > entries
