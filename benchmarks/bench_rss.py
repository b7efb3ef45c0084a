"""Benchmark d: peak RSS while exporting one 1 GiB layer, uncompressed and gzip.

``hatchway save -o`` and, for reference, ``skopeo copy oci: docker-archive:``, each measured as
a child process with ``wait4`` (the peak resident set of that process alone).  Memory must not
grow with the layer: hatchway streams in 1 MiB chunks and moves uncompressed bodies in the
kernel, so its peak is the interpreter plus its imports plus a few buffers per worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from content import ImageSpec, ensure_stores, layer_blob_files
from measure import Contender, median, round_robin, warm
from report import Row, Section, Target
from tools import Tools

SEED = 500
LIMIT_MIB = 100


def run(
    tools: Tools, work: Path, *, layer_size: int, reps: int, log: Callable[[str], None]
) -> list[Section]:
    images = [ImageSpec("rss", (SEED,))]
    roots = ensure_stores(work, "rss", images, {SEED: layer_size}, ("none", "gzip"), log)
    out = work / "out-rss.tar"
    for root in roots.values():
        warm(layer_blob_files(root, "rss"))
    log(f"d. peak RSS: one {layer_size / 2**20:.0f} MiB layer, {reps} reps")

    def remove() -> None:
        out.unlink(missing_ok=True)

    contenders = []
    for compression, root in roots.items():
        contenders += [
            Contender(
                f"hatchway, {compression}",
                partial(tools.hatchway_save, root, out, "bench:rss"),
                remove,
            ),
            Contender(
                f"skopeo, {compression}",
                partial(tools.skopeo_save, root, "rss", out),
                remove,
            ),
        ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    section = Section("rss", f"d. Peak RSS exporting one {layer_size / 2**20:.0f} MiB layer")
    section.rows = [Row(n, med[n], reps) for n in med]
    # The target bounds the worst run, not the median.
    section.targets = [
        Target(
            f"hatchway peak RSS, {c} (worst run)",
            max(s.maxrss for s in samples[f"hatchway, {c}"]) / 2**20,
            LIMIT_MIB,
            "<=",
            "MiB",
        )
        for c in roots
    ]
    return [section]
