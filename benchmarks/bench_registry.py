"""Registry benchmarks (issue 3): hatchway vs skopeo behind a slow link, measured in one run.

The registry (docker-registry on 127.0.0.1) sits behind the fault proxy of the tests set to
50 ms each way and 25 MB/s per connection.  Scenarios:

1. one image of 5 x 20 MiB gzip layers: ``hatchway save`` vs ``skopeo copy docker://...
   docker-archive:``;
2. 8 images x 6 layers (2 shared by all): one hatchway save of all 8 vs one skopeo copy per
   image, and vs hatchway with ``jobs=1``;
3. a save from the local store after ``pull`` vs a save straight from the registry.

Run: ``python benchmarks/bench_registry.py [--layer-mib 20] [--small-mib 2] [--reps 3]``.
The one-image case runs ``--reps`` times round-robin (the ``hatchway`` command as a user runs
it, ``hatchway.save()`` in this process, skopeo) and reports medians.  Needs
docker-registry and skopeo (Debian packages).  Prints seconds and ratios.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import Contender, median, round_robin, run_child, run_inline  # noqa: E402
from tests.fault_proxy import fault_proxy  # noqa: E402
from tests.peers import Skopeo, start_registry  # noqa: E402
from tests.registry_support import push_image, save_archive, save_from_registry  # noqa: E402
from tools import Tools  # noqa: E402

from hatchway import RegistryOptions, pull  # noqa: E402
from hatchway.testing.layout import LayoutBuilder  # noqa: E402
from hatchway.transports.layout.source import OCILayoutStore  # noqa: E402

LATENCY = 0.050
BANDWIDTH = 25e6


def _noise(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _gone(path: Path) -> None:
    path.unlink(missing_ok=True)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _atimed(fn: Callable[[], Awaitable[object]]) -> float:
    async def run() -> float:
        start = time.perf_counter()
        await fn()
        return time.perf_counter() - start

    return anyio.run(run, backend="trio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer-mib", type=float, default=20.0)
    parser.add_argument("--small-mib", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3, help="runs of the one-image case")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hatchway-bench-registry-"))
    registry = start_registry(work / "registry")
    try:
        layer, small = int(args.layer_mib * (1 << 20)), int(args.small_mib * (1 << 20))
        run(work, registry, layer, small, args.reps)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, registry: object, layer_size: int, small_size: int, reps: int = 3) -> None:
    from tests.peers import Registry

    assert isinstance(registry, Registry)
    print(f"building and pushing test images into {registry.url} ...", flush=True)
    b = LayoutBuilder(work / "layout")
    big = [b.layer({f"big/{i}": _noise(i, layer_size)}) for i in range(5)]
    push_image(registry.url, "bench/one", "1", b.root, b.image(big))
    shared = [b.layer({f"base/{i}": _noise(100 + i, small_size)}) for i in range(2)]
    many = []
    for n in range(8):
        own = [b.layer({f"img{n}/{i}": _noise(1000 + 10 * n + i, small_size)}) for i in range(4)]
        push_image(registry.url, f"bench/many{n}", "1", b.root, b.image(shared + own))
        many.append(f"bench/many{n}:1")
    skopeo = Skopeo(work / "skopeo")
    tools = Tools(work)
    opts = RegistryOptions(use_credential_files=False, max_connections_per_registry=16)
    rows: list[tuple[str, float]] = []

    with fault_proxy(registry.port) as proxy:
        proxy.reset(latency=LATENCY, bandwidth=BANDWIDTH)
        host = proxy.host
        out = work / "out"
        out.mkdir()

        def skopeo_copy(name: str, dest: Path) -> None:
            skopeo("copy", "--src-tls-verify=false", f"docker://{host}/{name}",
                   f"docker-archive:{dest}")  # fmt: skip

        def fresh(path: Path) -> Path:
            path.unlink(missing_ok=True)
            return path

        def skopeo_copy_nth(name: str, i: int) -> None:
            skopeo_copy(name, fresh(out / f"s8-{i}.tar"))

        one = [f"docker://{host}/bench/one:1"]
        all8 = [f"docker://{host}/{n}" for n in many]
        print(f"1. one image, 5 gzip layers ({reps} runs each, round-robin) ...", flush=True)
        cli = [tools.hatchway, "save", "-q", "-o", str(out / "h1.tar"), one[0]]
        firsts = round_robin(
            [
                Contender("cli", lambda: run_child(cli), partial(_gone, out / "h1.tar")),
                Contender(
                    "library",
                    lambda: run_inline(
                        partial(_atimed, lambda: save_from_registry(one, out / "h1l.tar", opts))
                    ),
                    partial(_gone, out / "h1l.tar"),
                ),
                Contender(
                    "skopeo",
                    lambda: run_inline(partial(skopeo_copy, "bench/one:1", out / "s1.tar")),
                    partial(_gone, out / "s1.tar"),
                ),
            ],
            reps,
            lambda line: print(line, flush=True),
        )
        t_h1 = median(firsts["cli"]).wall
        t_h1_lib = median(firsts["library"]).wall
        t_s1 = median(firsts["skopeo"]).wall
        rows += [
            ("one image: hatchway save (CLI, median)", t_h1),
            ("one image: hatchway.save() in-process (median)", t_h1_lib),
            ("one image: skopeo copy (median)", t_s1),
        ]

        print(f"2. 8 images x 6 layers, 2 shared ({reps} runs of the command, skopeo) ...")

        def cli8(jobs: int) -> Contender:
            argv = [tools.hatchway, "save", "-q", "-j", str(jobs), "-o", str(out / "c8.tar")]
            return Contender(
                f"cli j{jobs}", lambda: run_child([*argv, *all8]), partial(_gone, out / "c8.tar")
            )

        def skopeo8() -> None:
            for i, name in enumerate(many):
                skopeo_copy_nth(name, i)

        eights = round_robin(
            [cli8(8), cli8(16), Contender("skopeo x 8", lambda: run_inline(skopeo8))],
            reps,
            lambda line: print(line, flush=True),
        )
        t_c8, t_c8j16, t_s8m = (median(eights[k]).wall for k in ("cli j8", "cli j16", "skopeo x 8"))
        rss_c8 = max(s.maxrss for s in eights["cli j8"]) / (1 << 20)
        rows += [
            ("8 images: hatchway save -j 8 (CLI, median)", t_c8),
            ("8 images: hatchway save -j 16 (CLI, median)", t_c8j16),
            ("8 images: skopeo copy x 8 (median)", t_s8m),
        ]
        t_h8 = _atimed(lambda: save_from_registry(all8, fresh(out / "h8.tar"), opts, jobs=8))
        t_h8j16 = _atimed(lambda: save_from_registry(all8, fresh(out / "h8j16.tar"), opts, jobs=16))
        t_h8j1 = _atimed(lambda: save_from_registry(all8, fresh(out / "h8j1.tar"), opts, jobs=1))
        t_s8 = 0.0
        for i, name in enumerate(many):
            t_s8 += _timed(partial(skopeo_copy_nth, name, i))
        rows += [
            ("8 images: hatchway save (jobs 8)", t_h8),
            ("8 images: hatchway save (jobs 16)", t_h8j16),
            ("8 images: hatchway save (jobs 1)", t_h8j1),
            ("8 images: skopeo copy x 8", t_s8),
        ]

        print("3. pull, then save from the local store ...", flush=True)
        store = work / "store"
        t_pull = _atimed(lambda: pull(all8, store=store, registry=opts))
        local = [n.removeprefix("docker://") for n in all8]
        t_local = _atimed(
            lambda: save_archive(local, fresh(out / "local.tar"), OCILayoutStore(store))
        )
        same = (out / "local.tar").read_bytes() == (out / "h8.tar").read_bytes()
        rows += [
            ("8 images: hatchway pull", t_pull),
            ("8 images: save from local store after pull", t_local),
        ]

    print()
    print(f"link: {LATENCY * 1000:.0f} ms each way, {BANDWIDTH / 1e6:.0f} MB/s per connection")
    print(f"layers: 5 x {layer_size / (1 << 20):.0f} MiB; 8 images x 6 x "
          f"{small_size / (1 << 20):.0f} MiB")  # fmt: skip
    for label, seconds in rows:
        print(f"  {label:<46} {seconds:7.2f} s")
    print()
    print(f"  one image: skopeo / hatchway CLI               {t_s1 / t_h1:6.1f}x  (target >= 4.3)")
    print(f"  one image: skopeo / hatchway.save() in-process {t_s1 / t_h1_lib:6.1f}x")
    print(f"  8 images: skopeo x 8 / hatchway -j 8 CLI       {t_s8m / t_c8:6.1f}x  (target >= 13)")
    print(f"  8 images: skopeo x 8 / hatchway -j 16 CLI      {t_s8m / t_c8j16:6.1f}x")
    print(f"  8 images: hatchway -j 8 CLI peak RSS (worst)   {rss_c8:6.0f} MiB (target <= 64)")
    print(f"  8 images: skopeo x 8 / hatchway in-process     {t_s8 / t_h8:6.1f}x")
    print(f"  8 images: skopeo x 8 / hatchway jobs 16        {t_s8 / t_h8j16:6.1f}x")
    print(f"  8 images: hatchway jobs 1 / jobs 8             {t_h8j1 / t_h8:6.1f}x")
    print(f"  8 images: from registry / from local store     {t_h8 / t_local:6.1f}x")
    print(f"  local-store archive identical to registry one: {same}")


if __name__ == "__main__":
    main()
