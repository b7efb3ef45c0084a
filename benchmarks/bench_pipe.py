"""Writing an archive into a pipe: what abandonable writes cost.

Writes into stdout, a FIFO or a device run abandonably (``hatchway.blocking.Abandonable``):
every step duplicates the output descriptor, and a staged layer is opened afresh by the step
that copies it, so that a write blocked on a stalled reader can be abandoned on a stop
signal.  This measures ``hatchway save ... | cat > /dev/null`` — plain and zstd-compressed —
against the same command of the code before that change (a revision exported with
``git archive``, run from the same interpreter and dependencies), and ``cat`` of the layer
blob into the same pipe as the floor.

Run: ``python benchmarks/bench_pipe.py [--base REV] [--size MIB] [--reps N]``.  Data lives in
``benchmarks/.work/`` (shared with run.py).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tarfile
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from content import ImageSpec, ensure_stores, layer_blob_files  # noqa: E402
from measure import Contender, Sample, median, round_robin, run_child, warm  # noqa: E402

SEED = 700


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _export(rev: str, into: Path) -> Path:
    """The ``src`` tree of revision ``rev``, exported under ``into``."""
    target = into / f"src-{rev.replace('/', '_')}"
    if not target.exists():
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True
        ).stdout
        target.mkdir(parents=True)
        tar_path = target / "src.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(target, filter="data")
        tar_path.unlink()
    return target / "src"


def _piped(command: list[str], env: dict[str, str] | None = None) -> Sample:
    """``command | cat > /dev/null``, measured as a whole."""
    shell = f"{shlex.join(command)} | cat > /dev/null"
    return run_child(["bash", "-c", f"set -o pipefail; {shell}"], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare with")
    parser.add_argument("--size", type=int, default=1024, help="layer size in MiB")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    work = HERE / ".work"
    work.mkdir(exist_ok=True)
    roots = ensure_stores(
        work, "pipe", [ImageSpec("pipe", (SEED,))], {SEED: args.size << 20}, ("none",), _log
    )
    root = roots["none"]
    blobs = layer_blob_files(root, "pipe")
    warm(blobs)
    base_src = _export(args.base, work)
    save = [sys.executable, "-m", "hatchway", "save", "-q", "--store", str(root), "bench:pipe"]
    zstd = [*save, "--compress", "zstd", "--compress-level", "1"]
    ours = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    base = {**os.environ, "PYTHONPATH": str(base_src)}
    contenders = [
        Contender("cat (the floor)", partial(_piped, ["cat", *blobs])),
        Contender("hatchway, this change", partial(_piped, save, ours)),
        Contender(f"hatchway, {args.base}", partial(_piped, save, base)),
        Contender("hatchway zstd -1, this change", partial(_piped, zstd, ours)),
        Contender(f"hatchway zstd -1, {args.base}", partial(_piped, zstd, base)),
    ]
    _log(f"{args.size} MiB layer into a pipe, {args.reps} reps, against {args.base}")
    samples = round_robin(contenders, args.reps, _log)
    med = {name: median(s) for name, s in samples.items()}
    print(f"| {args.size} MiB into a pipe | wall (median of {args.reps}) | CPU | ratio |")
    print("|---|---|---|---|")
    pairs = {
        "hatchway, this change": f"hatchway, {args.base}",
        "hatchway zstd -1, this change": f"hatchway zstd -1, {args.base}",
    }
    for name, sample in med.items():
        other = pairs.get(name)
        ratio = f"{sample.wall / med[other].wall:.2f} of {args.base}" if other else ""
        print(f"| {name} | {sample.wall:.2f} s | {sample.cpu:.2f} s | {ratio} |")


if __name__ == "__main__":
    main()
