"""Build the bundled sample store: a small OCI image layout under ``sample/store``.

    python scripts/make_sample_store.py [DIR]

Four images share one base layer: ``sample/app`` with two tags (``1.0``, and ``2.0`` =
``latest`` one layer further), ``sample/tools:latest``, and a two-platform
``sample/multi:latest``.  Layers are gzip, zstd and uncompressed, as real stores mix them.
Deterministic: the same digests on every machine.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hatchway.testing.layout import LayoutBuilder, Symlink


def build(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
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


if __name__ == "__main__":
    target = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parent.parent / "sample" / "store"
    )
    build(target)
    print(f"sample store written to {target}")
