"""Content the tests put into images: a statically linked busybox."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.process import PeerError, require_binary


def static_busybox() -> Path:
    """Path of Debian's statically linked busybox (package busybox-static), checked to be static.

    A dynamically linked busybox would not run inside a one-layer image.
    """
    path = Path(require_binary("busybox"))
    if _elf_has_interpreter(path):
        pytest.fail(
            f"{path} is dynamically linked; install the Debian package 'busybox-static'",
            pytrace=False,
        )
    return path


def _elf_has_interpreter(path: Path) -> bool:
    """True if the 64-bit little-endian ELF file has a PT_INTERP header (is dynamically linked)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PeerError(f"{path}: not a 64-bit little-endian ELF file")
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    pt_interp = 3
    return any(
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        == pt_interp
        for i in range(phnum)
    )
