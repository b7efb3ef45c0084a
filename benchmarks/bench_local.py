"""Benchmarks a and b: a local OCI layout, ~1 GiB in 4 layers, uncompressed and gzip.

a. Uncompressed: ``hatchway save -o`` against ``cat`` of the same layer blobs into one file
   (the raw copy limit; ``cat`` 9.x moves the bytes with ``copy_file_range``) and against
   ``skopeo copy oci:DIR:tag docker-archive:FILE``.  Reference lines: ``cat`` followed by an
   fsync of the output (what ``hatchway save --fsync`` adds; neither ``docker save`` nor the
   default ``hatchway save`` fsyncs), a Python read/write copy, the same copy hashing the bytes
   with sha256 (hatchway verifies every layer's digest), and hatchway's fixed start-up (the
   interpreter importing hatchway's CLI and trio, which it runs on).
b. gzip: hatchway against skopeo (both must decompress, because a docker-archive holds
   uncompressed layers, and both verify the blob digest and the diffID).  Reference lines:
   Python zlib inflate + sha256 of the compressed and of the inflated stream (hatchway's CPU
   work for one layer, without writing), single-threaded and in two processes (the two-core
   limit for that work), and ``gzip -dc`` to /dev/null.

Each contender writes to ``.work/out.tar``, removed (and written back with ``sync``) between
runs outside the timing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from content import ImageSpec, ensure_stores, layer_blob_files
from measure import Contender, median, round_robin, run_child, run_inline, warm
from report import Row, Section, Target
from tools import Tools

LAYERS = 4


def run(
    tools: Tools, work: Path, *, layer_size: int, reps: int, log: Callable[[str], None]
) -> list[Section]:
    seeds = tuple(range(1, LAYERS + 1))
    sizes = {seed: layer_size for seed in seeds}
    images = [ImageSpec("local", seeds)]
    roots = ensure_stores(work, "local", images, sizes, ("none", "gzip"), log)
    out = work / "out.tar"
    total = LAYERS * layer_size
    return [
        _uncompressed(tools, roots["none"], out, total, reps, log),
        _gzip(tools, roots["gzip"], out, total, reps, log),
    ]


def _remove(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)


def _uncompressed(
    tools: Tools, root: Path, out: Path, total: int, reps: int, log: Callable[[str], None]
) -> Section:
    blobs = layer_blob_files(root, "local")
    warm(blobs)
    log(f"a. uncompressed: {len(blobs)} layers, {total / 2**30:.2f} GiB, {reps} reps")
    contenders = [
        Contender("hatchway", lambda: tools.hatchway_save(root, out, "bench:local"), _remove(out)),
        Contender("cat", lambda: run_child(["cat", *blobs], stdout_path=str(out)), _remove(out)),
        Contender(
            "cat + fsync",
            lambda: run_child(["sh", "-c", 'cat "$@" > "$0" && sync "$0"', str(out), *blobs]),
            _remove(out),
        ),
        Contender("skopeo", lambda: tools.skopeo_save(root, "local", out), _remove(out)),
        Contender(
            "python copy", lambda: run_inline(lambda: _py_copy(blobs, out, False)), _remove(out)
        ),
        Contender(
            "python copy + sha256",
            lambda: run_inline(lambda: _py_copy(blobs, out, True)),
            _remove(out),
        ),
        Contender(
            "hatchway start-up",
            lambda: run_child([sys.executable, "-c", "import hatchway.cli, trio"]),
            _remove(out),
        ),
    ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    notes = {
        "hatchway": "`hatchway save -o`",
        "skopeo": "`skopeo copy oci: docker-archive:`",
        "cat + fsync": "reference",
        "python copy": "reference, in-process",
        "python copy + sha256": "reference, in-process",
        "hatchway start-up": "reference: import hatchway.cli and trio",
    }
    section = Section("uncompressed", "a. Local store, 4 x uncompressed layers")
    section.rows = [Row(n, med[n], reps, notes.get(n, "")) for n in med]
    h = med["hatchway"].wall
    section.targets = [
        Target("hatchway / cat", h / med["cat"].wall, 2.0, "<="),
        Target("skopeo / hatchway", med["skopeo"].wall / h, 3.0, ">="),
    ]
    startup = med["hatchway start-up"].wall
    section.notes.append(
        f"(hatchway - its start-up) / cat = {(h - startup) / med['cat'].wall:.2f}x: the "
        f"fixed {startup:.2f} s of start-up is {startup / h:.0%} of hatchway's time."
    )
    return section


def _gzip(
    tools: Tools, root: Path, out: Path, total: int, reps: int, log: Callable[[str], None]
) -> Section:
    blobs = layer_blob_files(root, "local")
    warm(blobs)
    stored = sum(os.path.getsize(b) for b in blobs)
    log(f"b. gzip: {len(blobs)} layers, {stored / 2**20:.0f} MiB stored, {reps} reps")
    contenders = [
        Contender("hatchway", lambda: tools.hatchway_save(root, out, "bench:local"), _remove(out)),
        Contender("skopeo", lambda: tools.skopeo_save(root, "local", out), _remove(out)),
        Contender("python zlib inflate + 2xsha256", lambda: run_inline(lambda: _py_inflate(blobs))),
        Contender(
            "python zlib inflate + 2xsha256, 2 processes",
            lambda: run_inline(lambda: _py_inflate_parallel(blobs)),
        ),
        Contender(
            "gzip -dc",
            lambda: run_child(["sh", "-c", 'for f; do gzip -dc "$f"; done', "sh", *blobs]),
        ),
    ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    notes = {
        "hatchway": "`hatchway save -o`",
        "skopeo": "`skopeo copy oci: docker-archive:`",
        "python zlib inflate + 2xsha256": "reference, one thread, no output",
        "python zlib inflate + 2xsha256, 2 processes": "reference, the 2-core limit, no output",
        "gzip -dc": "reference, to /dev/null",
    }
    section = Section(
        "gzip",
        f"b. Local store, 4 x gzip layers ({stored / 2**20:.0f} MiB stored, "
        f"{total / 2**20:.0f} MiB uncompressed)",
    )
    section.rows = [Row(n, med[n], reps, notes.get(n, "")) for n in med]
    h = med["hatchway"].wall
    section.targets = [Target("skopeo / hatchway", med["skopeo"].wall / h, 2.0, ">=")]
    single = med["python zlib inflate + 2xsha256"].wall
    section.notes.append(
        f"hatchway / single-thread inflate+hash = {h / single:.2f}x; "
        f"hatchway / 2-process inflate+hash = "
        f"{h / med['python zlib inflate + 2xsha256, 2 processes'].wall:.2f}x."
    )
    return section


def _py_copy(blobs: list[str], out: Path, verify: bool) -> None:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(out, "wb", buffering=0) as dest:
        for blob in blobs:
            hasher = hashlib.sha256()
            with open(blob, "rb", buffering=0) as src:
                while n := src.readinto(buf):
                    if verify:
                        hasher.update(view[:n])
                    dest.write(view[:n])


def _inflate_one(blob: str) -> int:
    blob_hash, diff_hash = hashlib.sha256(), hashlib.sha256()
    inflater = zlib.decompressobj(wbits=31)
    size = 0
    with open(blob, "rb", buffering=0) as src:
        while chunk := src.read(1 << 20):
            blob_hash.update(chunk)
            data = inflater.decompress(chunk)
            diff_hash.update(data)
            size += len(data)
    tail = inflater.flush()
    diff_hash.update(tail)
    return size + len(tail)


def _py_inflate(blobs: list[str]) -> None:
    for blob in blobs:
        _inflate_one(blob)


def _py_inflate_parallel(blobs: list[str]) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_inflate_one, blobs))
