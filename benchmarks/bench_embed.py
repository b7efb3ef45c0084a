"""Embedding benchmarks (issue 11): how good a guest hatchway is in a host's event loop.

Measured on asyncio and on trio, from inside a host application:

* **loop lag**: a ticker task sleeps 5 ms in a loop beside an operation and records how late it
  wakes; max and p99 lateness beside a save of 1 000 small images, of ~1 GiB of gzip layers,
  and of a registry save (docker-registry on loopback);
* **cancel-to-return**: the scope around a save of ~1 GiB of gzip layers is cancelled at
  several points (mid-resolution, mid-decompression, mid-write); the time from ``cancel()`` to
  the scope's exit, and whether anything (staging directory, temp file) was left behind;
* **sharing**: two concurrent saves of overlapping registry images through one
  :class:`hatchway.Session` vs one after the other without a session, with blob fetches
  counted at the registry.

Run: ``python benchmarks/bench_embed.py [--quick] [--only lag,cancel,share]``.  Data lives in
``benchmarks/.work/`` (shared with run.py).  Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from content import ImageSpec, ensure_stores, tiny_layer_store  # noqa: E402

import hatchway  # noqa: E402
from hatchway.testing import LayoutBuilder  # noqa: E402

TICK = 0.005
BACKENDS = ("asyncio", "trio")
MiB = 1 << 20


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the ticker ------------------------------------------------------------------------------


async def _ticker(lags: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await anyio.sleep(TICK)
        lags.append(max(0.0, time.perf_counter() - start - TICK))


async def lag_beside(operation: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
    """(max lag, p99 lag, wall time) of a 5 ms ticker while ``operation`` runs."""
    lags: list[float] = []
    stop = anyio.Event()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_ticker, lags, stop)
        await anyio.sleep(0.02)  # the ticker's first ticks: a baseline
        try:
            await operation()
        finally:
            stop.set()
    wall = time.perf_counter() - start
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return max(lags), p99, wall


# -- workloads -------------------------------------------------------------------------------


def gzip_store(work: Path, layer_size: int) -> tuple[Path, list[str]]:
    """~1 GiB (4 layers) of realistic gzip content: the same store as benchmark b."""
    seeds = (1, 2, 3, 4)
    roots = ensure_stores(
        work,
        "local",
        [ImageSpec("local", seeds)],
        dict.fromkeys(seeds, layer_size),
        ("gzip",),
        _log,
    )
    return roots["gzip"], ["bench:local"]


# -- loop lag -------------------------------------------------------------------------------


def bench_lag(work: Path, quick: bool) -> list[str]:
    many_root, many_names = tiny_layer_store(work, 100 if quick else 1000)
    gz_root, gz_names = gzip_store(work, (8 if quick else 256) * MiB)
    out = work / "embed-out.tar"
    rows = ["| workload | backend | max lag | p99 lag | wall |", "|---|---|---:|---:|---:|"]
    workloads: list[tuple[str, Path, list[str]]] = [
        (f"{len(many_names)} small images", many_root, many_names),
        ("4 gzip layers" + (" (quick)" if quick else " x 256 MiB"), gz_root, gz_names),
    ]
    for label, root, names in workloads:
        for backend in BACKENDS:

            async def save(root: Path = root, names: list[str] = names) -> object:
                return await hatchway.save(names, out, store=root)

            max_lag, p99, wall = anyio.run(lag_beside, save, backend=backend)
            out.unlink(missing_ok=True)
            rows.append(
                f"| {label} | {backend} | {max_lag * 1e3:.1f} ms | {p99 * 1e3:.1f} ms "
                f"| {wall:.2f} s |"
            )
            _log(rows[-1])
    rows += registry_lag(work, out, quick)
    return rows


def registry_lag(work: Path, out: Path, quick: bool) -> list[str]:
    from tests.peers import start_registry
    from tests.registry_support import push_image

    registry = start_registry(work / "embed-registry")
    try:
        b = LayoutBuilder(work / "embed-registry-layout")
        size = (1 if quick else 8) * MiB
        names = []
        for n in range(4):
            layers = [b.layer({f"r{n}/{i}": bytes(range(256)) * (size // 256)}) for i in range(3)]
            push_image(registry.url, f"embed/r{n}", "1", b.root, b.image(layers))
            names.append(f"docker://{registry.host}/embed/r{n}:1")
        options = hatchway.RegistryOptions(use_credential_files=False)
        rows = []
        for backend in BACKENDS:

            async def save() -> object:
                return await hatchway.save(names, out, registry=options)

            max_lag, p99, wall = anyio.run(lag_beside, save, backend=backend)
            out.unlink(missing_ok=True)
            rows.append(
                f"| registry save, 4 images x 3 layers | {backend} | {max_lag * 1e3:.1f} ms "
                f"| {p99 * 1e3:.1f} ms | {wall:.2f} s |"
            )
            _log(rows[-1])
        return rows
    finally:
        registry.stop()


# -- cancel to return ------------------------------------------------------------------------


async def cancel_at(
    root: Path, names: list[str], out: Path, when: Callable[[Any], bool], delay: float = 0.0
) -> tuple[float, bool]:
    """Cancel a save at the first progress event ``when`` accepts (then ``delay`` later);
    return (seconds from cancel() to return, whether anything was left behind)."""
    cancelled_at: list[float] = []
    scope = anyio.CancelScope()
    triggered = anyio.Event()

    def progress(event: object) -> None:
        if not triggered.is_set() and when(event):
            triggered.set()

    async def canceller() -> None:
        await triggered.wait()
        if delay:
            await anyio.sleep(delay)
        cancelled_at.append(time.perf_counter())
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller)
        with scope:
            await hatchway.save(names, out, store=root, progress=progress)
        returned = time.perf_counter()
        tg.cancel_scope.cancel()
    if not cancelled_at:
        return math.nan, False
    left = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    return returned - cancelled_at[0], bool(left) or out.exists()


def bench_cancel(work: Path, quick: bool) -> list[str]:
    root, names = gzip_store(work, (8 if quick else 256) * MiB)
    out_dir = Path(tempfile.mkdtemp(prefix="embed-cancel-", dir=work))
    out = out_dir / "out.tar"
    points: list[tuple[str, Callable[[Any], bool], float]] = [
        ("mid-resolution", lambda e: True, 0.0),
        ("mid-decompression", lambda e: isinstance(e, hatchway.LayerAdvanced), 0.05),
        ("mid-write", lambda e: isinstance(e, hatchway.WriteAdvanced), 0.0),
    ]
    rows = ["| cancelled | backend | cancel → return | left behind |", "|---|---|---:|---|"]
    try:
        for label, when, delay in points:
            for backend in BACKENDS:
                samples = []
                left_any = False
                for _ in range(3):
                    took, left = anyio.run(
                        cancel_at, root, names, out, when, delay, backend=backend
                    )
                    samples.append(took)
                    left_any |= left
                rows.append(
                    f"| {label} | {backend} | median {statistics.median(samples) * 1e3:.0f} ms, "
                    f"max {max(samples) * 1e3:.0f} ms | {'YES' if left_any else 'nothing'} |"
                )
                _log(rows[-1])
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default="lag,cancel", help="comma-separated: lag,cancel")
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    only = {o.strip() for o in args.only.split(",")}
    if "lag" in only:
        print(
            "\n".join(
                [
                    "### Loop lag beside a save (5 ms ticker)",
                    "",
                    *bench_lag(args.work, args.quick),
                    "",
                ]
            )
        )
    if "cancel" in only:
        print("\n".join(["### Cancel to return", "", *bench_cancel(args.work, args.quick), ""]))


if __name__ == "__main__":
    main()
