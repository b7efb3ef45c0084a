"""Build the bundled sample store: a small OCI image layout (default ``sample/store``).

    python scripts/make_sample_store.py [DIR]

Four images share one base layer: ``sample/app`` with two tags (``1.0``, and ``2.0`` =
``latest`` one layer further), ``sample/tools:latest``, and a two-platform
``sample/multi:latest``.  Layers are gzip, zstd and uncompressed, as real stores mix them.
Deterministic: the same digests on every machine.

The store is built beside DIR and renamed into place.  An existing DIR is replaced only if this
script made it (it carries a marker file) or it is empty; anything else is refused, so a
mistyped path never deletes someone's data.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from hatchway.testing import LayoutBuilder, Symlink

MARKER = ".hatchway-sample-store"
DEFAULT = Path(__file__).resolve().parent.parent / "sample" / "store"


def build(root: Path) -> None:
    """Write the sample images into a new OCI layout at ``root``."""
    b = LayoutBuilder(root)
    base = b.layer(
        {
            "etc/os-release": b'NAME="hatchway sample"\nID=sample\n',
            "etc/motd": b"Welcome to the hatchway sample image.\n",
            "usr/bin/": None,
            "bin": Symlink("usr/bin"),
        },
        compression="gzip",
    )
    app = b.layer(
        {"srv/app/VERSION": b"1.0\n", "srv/app/run.sh": b"#!/bin/sh\necho app\n"},
        compression="zstd",
    )
    app2 = b.layer(
        {"srv/app/VERSION": b"2.0\n", "srv/app/data.txt": b"0123456789\n" * 4096},
        compression="none",
    )
    tools = b.layer({"usr/bin/hello": b"#!/bin/sh\necho hello\n"}, compression="gzip")
    cmd = ["/srv/app/run.sh"]
    v1 = b.image([base, app], cmd=cmd, created="2025-01-15T12:00:00Z")
    v2 = b.image([base, app, app2], cmd=cmd, created="2025-03-01T08:30:00Z")
    t = b.image([base, tools], cmd=["/usr/bin/hello"], created="2025-02-10T09:00:00Z")
    amd = b.image([base, b.layer({"etc/arch": b"amd64\n"})], architecture="amd64")
    arm = b.image([base, b.layer({"etc/arch": b"arm64\n"})], architecture="arm64", variant="v8")
    b.tag(v1, "sample/app:1.0")
    b.tag(v2, "sample/app:2.0")
    b.tag(v2, "sample/app:latest")
    b.tag(t, "sample/tools:latest")
    b.tag(b.index([amd, arm]), "sample/multi:latest")
    b.save()


def replaceable(target: Path) -> bool:
    """Whether ``target`` may be replaced: missing, empty, or a sample store of ours."""
    if not target.exists():
        return True
    if not target.is_dir() or target.is_symlink():
        return False
    return (target / MARKER).is_file() or not any(target.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build hatchway's sample store (an OCI image layout) at DIR."
    )
    parser.add_argument(
        "dir", nargs="?", type=Path, default=DEFAULT, metavar="DIR", help=f"default: {DEFAULT}"
    )
    target: Path = parser.parse_args(argv).dir
    if not replaceable(target):
        print(
            f"make_sample_store: error: {target} exists and is not a sample store made by "
            "this script; choose another DIR or remove it yourself",
            file=sys.stderr,
        )
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging / "store")
        (staging / "store" / MARKER).write_text("built by scripts/make_sample_store.py\n")
        if target.exists():
            shutil.rmtree(target)  # ours: checked above
        (staging / "store").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"sample store written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
