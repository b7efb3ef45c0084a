"""Benchmark c: a slow store — latency per blob and a per-stream bandwidth cap.

8 images x 6 layers; every image's first layer is one shared base, so 41 distinct layers.  The
store is the local layout wrapped in :class:`hatchway.testing.slow.SlowStore` (50 ms before the
first byte of every blob, each stream capped at 20 MB/s, no local paths: the engine has to
stream every blob as from a registry) and a :class:`CountingStore` that proves every blob was
opened exactly once.  ``hatchway.save(..., jobs=8)`` against ``jobs=1``, through the library
API in this process, with gzip layers (as registries serve them) and uncompressed ones.

The ideal ``jobs=1`` time is the sum over distinct layers of latency + stored size / bandwidth
(the cap applies to the bytes on the wire, so gzip layers arrive ~3x sooner); the ideal
``jobs=8`` time is about an eighth of it, so the best possible ratio is a little under 8.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
from content import ImageSpec, ensure_stores, layer_blob_files
from measure import Contender, Sample, median, round_robin, run_inline, warm
from report import Row, Section, Target

import hatchway
from hatchway.testing.slow import CountingStore, SlowStore
from hatchway.transports.layout.source import OCILayoutStore

LATENCY = 0.05
BANDWIDTH = 20e6
BASE_SEED = 1000


def run(
    work: Path,
    *,
    images: int,
    layers: int,
    layer_size: int,
    reps: int,
    log: Callable[[str], None],
) -> list[Section]:
    specs = [
        ImageSpec(
            f"img{i}",
            (BASE_SEED, *(BASE_SEED + 1 + i * (layers - 1) + k for k in range(layers - 1))),
        )
        for i in range(images)
    ]
    seeds = sorted({s for spec in specs for s in spec.seeds})
    sizes = {seed: layer_size for seed in seeds}
    roots = ensure_stores(work, "slow", specs, sizes, ("gzip", "none"), log)
    names = [f"bench:{spec.tag}" for spec in specs]
    out = work / "out-slow.tar"
    for root in roots.values():
        warm([str(p) for p in (root / "blobs" / "sha256").iterdir() if p.is_file()])
    ideal = {c: _ideal_serial(root, [spec.tag for spec in specs]) for c, root in roots.items()}
    log(
        f"c. slow store: {images} images x {layers} layers ({len(seeds)} distinct, "
        f"{layer_size / 2**20:g} MiB each), {LATENCY * 1000:.0f} ms latency, "
        f"{BANDWIDTH / 1e6:g} MB/s per stream, {reps} reps"
    )

    def contender(compression: str, jobs: int, backend: str = "asyncio") -> Contender:
        suffix = "" if backend == "asyncio" else f", {backend}"
        return Contender(
            f"{compression}, jobs={jobs}{suffix}",
            partial(_save_once, roots[compression], names, out, jobs, backend, len(seeds)),
            lambda: out.unlink(missing_ok=True),
        )

    contenders = [
        contender("gzip", 1),
        contender("gzip", 8),
        contender("gzip", 8, "trio"),
        contender("none", 1),
        contender("none", 8),
    ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    section = Section(
        "slow",
        f"c. Slow store ({LATENCY * 1000:.0f} ms latency per blob, "
        f"{BANDWIDTH / 1e6:g} MB/s per stream): {images} images x {layers} layers "
        f"({len(seeds)} distinct, {layer_size / 2**20:g} MiB each), library API",
    )
    section.rows = [Row(n, med[n], reps) for n in med]
    gzip_ratio = med["gzip, jobs=1"].wall / med["gzip, jobs=8"].wall
    none_ratio = med["none, jobs=1"].wall / med["none, jobs=8"].wall
    section.targets = [
        Target("gzip: jobs=1 / jobs=8", gzip_ratio, 5.0, ">="),
        Target("uncompressed: jobs=1 / jobs=8", none_ratio, 5.0, ">="),
    ]
    section.notes.append(
        "Ideal times (latency + stored size / bandwidth per distinct layer, no CPU): "
        + "; ".join(f"{c}: jobs=1 {t:.2f} s, jobs=8 >= {t / 8:.2f} s" for c, t in ideal.items())
        + ". Every blob was opened exactly once in every run (CountingStore)."
    )
    return [section]


def _ideal_serial(root: Path, tags: list[str]) -> float:
    blobs = {blob for tag in tags for blob in layer_blob_files(root, tag)}
    return sum(LATENCY + os.path.getsize(blob) / BANDWIDTH for blob in blobs)


def _save_once(
    root: Path, names: list[str], out: Path, jobs: int, backend: str, distinct: int
) -> Sample:
    counting = CountingStore(SlowStore(OCILayoutStore(root), LATENCY, BANDWIDTH))

    async def save() -> None:
        await hatchway.save(names, out, store=counting, jobs=jobs)

    sample = run_inline(lambda: anyio.run(save, backend=backend))
    if len(counting.opens) != distinct or set(counting.opens.values()) != {1}:
        raise AssertionError(f"blobs not fetched exactly once: {dict(counting.opens)}")
    return sample
