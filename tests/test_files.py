"""files.py: which file a rename may hold on to while it replaces it."""

from __future__ import annotations

import os
from pathlib import Path

from hatchway.files import _hold_replaced


def test_only_a_regular_file_with_one_name_is_held(tmp_path: Path) -> None:
    """Held across the rename, the replaced file's blocks are freed when the descriptor
    closes in the background; anything else is left to the rename as it is."""
    plain = tmp_path / "plain.tar"
    plain.write_bytes(b"x" * 4096)
    fd = _hold_replaced(plain)
    assert fd is not None
    try:
        assert os.fstat(fd).st_ino == plain.stat().st_ino
    finally:
        os.close(fd)
    linked = tmp_path / "linked.tar"
    linked.write_bytes(b"y")
    os.link(linked, tmp_path / "other-name")  # its blocks stay after the rename anyway
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without blocking, and let go
    symlink = tmp_path / "link"
    symlink.symlink_to(plain)  # a rename replaces the link, never the file it names
    for path in (linked, fifo, symlink, tmp_path / "missing", tmp_path):
        assert _hold_replaced(path) is None, path
