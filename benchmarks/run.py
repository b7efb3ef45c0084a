"""Run hatchway's benchmarks and print the figures as Markdown (see docs/benchmarks.md).

    python benchmarks/run.py            # the full run: ~1 GiB layers, a few minutes
    python benchmarks/run.py --quick    # a smoke run with small sizes
    python benchmarks/run.py --only local,slow --reps 5 --keep --json results.json

Each benchmark runs its contenders side by side in one run and reports medians and ratios:
absolute times on a shared machine drift from run to run, ratios measured together much less.
Generated data lives in ``benchmarks/.work/`` and is removed at the end unless ``--keep`` (a
kept work directory is reused by the next run when its spec matches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bench_bundles
import bench_local
import bench_rss
import bench_slow
from report import Section
from tools import Tools

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("local", "slow", "rss", "bundles")
MiB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep benchmarks/.work afterwards")
    parser.add_argument("--reps", type=int, help="repetitions per contender (default 3, quick 1)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="work directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    reps = args.reps or (1 if args.quick else 3)
    sizes = {
        "local_layer": (16 if args.quick else 256) * MiB,
        "rss_layer": (64 if args.quick else 1024) * MiB,
        "slow_images": 4 if args.quick else 8,
        "slow_layers": 3 if args.quick else 6,
        "slow_layer": (1 if args.quick else 4) * MiB,
        "bundle_base": (16 if args.quick else 128) * MiB,
        "bundle_own": (4 if args.quick else 32) * MiB,
    }

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    _check_disk(work, only, sizes)
    started = time.monotonic()
    sections: list[Section] = []
    try:
        tools = Tools(work)
        if "local" in only:
            sections += bench_local.run(
                tools, work, layer_size=sizes["local_layer"], reps=reps, log=_log
            )
        if "slow" in only:
            sections += bench_slow.run(
                work,
                images=sizes["slow_images"],
                layers=sizes["slow_layers"],
                layer_size=sizes["slow_layer"],
                reps=reps,
                log=_log,
            )
        if "bundles" in only:
            sections += bench_bundles.run(
                tools,
                work,
                layer_size=sizes["local_layer"],
                base_size=sizes["bundle_base"],
                own_size=sizes["bundle_own"],
                reps=reps,
                log=_log,
            )
        if "rss" in only:
            sections += bench_rss.run(
                tools, work, layer_size=sizes["rss_layer"], reps=reps, log=_log
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    header = _header(reps, args.quick, time.monotonic() - started)
    print("\n" + header + "\n" + "\n".join(s.markdown() for s in sections))
    missed = [t.label for s in sections for t in s.targets if not t.met]
    print("All targets met." if not missed else f"Targets missed: {'; '.join(missed)}")
    if args.json:
        args.json.write_text(
            json.dumps({"header": header, "sections": [s.as_json() for s in sections]}, indent=2)
        )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_disk(work: Path, only: list[str], sizes: dict[str, int]) -> None:
    """Refuse to start without room for inputs, outputs and staging (with a margin)."""
    need = 0
    if "local" in only:
        # the layers uncompressed and as gzip, an output, skopeo's temp files
        need += 4 * sizes["local_layer"] * 4
    if "rss" in only:
        need += sizes["rss_layer"] * 4
    if "bundles" in only:
        # the layers, a plain archive, compressed copies, the load bundle, store and OCI copy
        need += 4 * sizes["local_layer"] * 4 + (sizes["bundle_base"] + 8 * sizes["bundle_own"]) * 4
    if "slow" in only:
        need += sizes["slow_images"] * sizes["slow_layers"] * sizes["slow_layer"] * 3
    free = shutil.disk_usage(work).free
    _log(f"work directory {work}: {free / 2**30:.1f} GiB free, about {need / 2**30:.1f} GiB needed")
    if free < need * 1.25:
        raise SystemExit(f"not enough free disk under {work}: need ~{need / 2**30:.1f} GiB")


def _header(reps: int, quick: bool, elapsed: float) -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"## Results{' (quick run)' if quick else ''}\n\n"
        f"{when}; {platform.system()} {platform.release()}, {cpus} cores ({model}); "
        f"Python {platform.python_version()}; medians of {reps} run(s), page cache warm; "
        f"benchmark wall time {elapsed / 60:.1f} min.\n"
    )


if __name__ == "__main__":
    main()
