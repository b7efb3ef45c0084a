"""Push benchmark (issue 9): hatchway push vs skopeo vs the link's bound, measured in one run.

A registry (docker-registry on 127.0.0.1) sits behind the tests' fault proxy set to 50 ms each
way and 25 MB/s per connection in each direction, as in ``bench_registry.py``.  The images are
that benchmark's set: 8 images x 6 gzip layers of ``--layer-mib`` MiB, the first 2 layers
shared by all 8, in a local OCI layout.  Contenders, each pushing into fresh repositories:

1. ``hatchway.push`` of the 8 images (library, trio, in-process: no interpreter start-up), at
   the default ``jobs=8`` and at ``jobs=64`` (``-j 64``: as parallel as the bound; the
   destination gets as many connections as jobs);
2. ``skopeo copy oci:LAYOUT:TAG docker://...`` once per image, one after the other;
3. the link's bound: every distinct blob uploaded at once with curl (one ``POST`` + ``PUT``
   each, 42 in parallel), then the shared ones mounted into the other repositories at once,
   then the 8 manifests at once — no existence checks, nothing verified;
4. a second ``hatchway.push`` of the same images (everything already there).

Run: ``python benchmarks/bench_push.py [--layer-mib 2] [--reps 3]``.  Needs docker-registry,
skopeo and curl (Debian packages).  Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fault_proxy import fault_proxy  # noqa: E402
from tests.peers import Registry, Skopeo, start_registry  # noqa: E402

import hatchway  # noqa: E402
from hatchway.testing.layout import BuiltImage, LayoutBuilder  # noqa: E402

LATENCY = 0.050
BANDWIDTH = 25e6
IMAGES = 8
SHARED = 2
OWN = 4

#: One blob upload the way a minimal client does it: POST for a session, PUT the body.
CURL_BLOB = r"""set -e
loc=$(curl -sS -o /dev/null -D - -X POST "$1/v2/$2/blobs/uploads/" | tr -d '\r' \
      | sed -n 's/^[Ll]ocation: //p')
case "$loc" in *\?*) sep='&';; *) sep='?';; esac
curl -sS -f -o /dev/null -T "$3" -H 'Content-Type: application/octet-stream' \
     "$loc${sep}digest=$4"
"""


def _noise(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _median_of(reps: int, run: Callable[[int], float]) -> float:
    return statistics.median(run(rep) for rep in range(reps))


def _atimed(fn: Callable[[], Awaitable[object]]) -> float:
    async def go() -> float:
        start = time.perf_counter()
        await fn()
        return time.perf_counter() - start

    return anyio.run(go, backend="trio")


def _build(layout: Path, layer_size: int) -> list[tuple[str, str, BuiltImage]]:
    """The 8 images, tagged ``bench/manyN:vN`` (skopeo finds them as ``oci:LAYOUT:vN``)."""
    b = LayoutBuilder(layout)
    shared = [b.layer({f"base/{i}": _noise(100 + i, layer_size)}) for i in range(SHARED)]
    images = []
    for n in range(IMAGES):
        own = [b.layer({f"img{n}/{i}": _noise(1000 + 10 * n + i, layer_size)}) for i in range(OWN)]
        image = b.image(shared + own, created=f"2024-01-0{n + 1}T00:00:00Z")
        b.tag(image, f"bench/many{n}:v{n}")
        images.append((f"bench/many{n}", f"v{n}", image))
    b.save()
    return images


def _wait_all(procs: list[subprocess.Popen[bytes]], what: str) -> None:
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a curl {what} failed")


def _curl_bound(
    url: str, prefix: str, layout: Path, images: list[tuple[str, str, BuiltImage]]
) -> float:
    """The least a client must do, each step fully parallel: every distinct blob uploaded
    once (into the first repository that needs it), then mounted into the others, then every
    manifest put.  No existence checks, no verification."""
    blobs = layout / "blobs" / "sha256"
    first: dict[str, str] = {}
    mounts: list[tuple[str, str]] = []
    for repo, _, image in images:
        for digest in [image.config_digest, *(la.digest for la in image.layers)]:
            if first.setdefault(digest, repo) != repo:
                mounts.append((digest, repo))
    start = time.perf_counter()
    _wait_all(
        [
            subprocess.Popen(["sh", "-c", CURL_BLOB, "curl-blob", url, f"{prefix}/{repo}",
                              str(blobs / digest.removeprefix("sha256:")), digest])
            for digest, repo in first.items()
        ],
        "blob upload",
    )  # fmt: skip
    _wait_all(
        [
            subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null", "-X", "POST",
                              f"{url}/v2/{prefix}/{repo}/blobs/uploads/"
                              f"?mount={digest}&from={prefix}/{first[digest]}"])
            for digest, repo in mounts
        ],
        "mount",
    )  # fmt: skip
    _wait_all(
        [
            subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H",
                              f"Content-Type: {image.media_type}", "--data-binary",
                              f"@{blobs / image.digest.removeprefix('sha256:')}",
                              f"{url}/v2/{prefix}/{repo}/manifests/{tag}"])
            for repo, tag, image in images
        ],
        "manifest upload",
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer-mib", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    for tool in ("skopeo", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y {tool})")
    work = Path(tempfile.mkdtemp(prefix="hatchway-bench-push-"))
    registry = start_registry(work / "registry")
    try:
        run(work, registry, int(args.layer_mib * (1 << 20)), args.reps)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, registry: Registry, layer_size: int, reps: int) -> None:
    print(f"building {IMAGES} images x {SHARED + OWN} layers of {layer_size >> 20} MiB ...")
    layout = work / "layout"
    images = _build(layout, layer_size)
    names = [f"{repo}:{tag}" for repo, tag, _ in images]
    skopeo = Skopeo(work / "skopeo")
    default = hatchway.RegistryOptions(use_credential_files=False)
    rows: list[tuple[str, float]] = []

    with fault_proxy(registry.port) as proxy:
        proxy.reset(latency=LATENCY, bandwidth=BANDWIDTH)
        host = proxy.host

        def hatchway_push(prefix: str, jobs: int, opts: hatchway.RegistryOptions) -> float:
            def push() -> Awaitable[hatchway.PushResult]:
                return hatchway.push(names, f"{host}/{prefix}", store=layout, registry=opts,
                                     jobs=jobs)  # fmt: skip

            return _atimed(push)

        def skopeo_each(prefix: str) -> float:
            start = time.perf_counter()
            for repo, tag, _ in images:
                skopeo("copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
                       f"docker://{host}/{prefix}/{repo}:{tag}")  # fmt: skip
            return time.perf_counter() - start

        print("hatchway push, jobs 8 ...", flush=True)
        t_h8 = _median_of(reps, lambda r: hatchway_push(f"h8-{r}", 8, default))
        print("hatchway push, jobs 64 ...", flush=True)
        t_h64 = _median_of(reps, lambda r: hatchway_push(f"h64-{r}", 64, default))
        print("hatchway push again (everything there) ...", flush=True)
        t_again = _median_of(reps, lambda r: hatchway_push("h8-0", 8, default))
        print("skopeo copy x 8 ...", flush=True)
        t_skopeo = _median_of(reps, lambda r: skopeo_each(f"s-{r}"))
        print("curl, every blob at once ...", flush=True)
        t_curl = _median_of(reps, lambda r: _curl_bound(f"http://{host}", f"c-{r}", layout, images))
        rows += [
            ("hatchway push (jobs 8)", t_h8),
            ("hatchway push (jobs 64)", t_h64),
            ("hatchway push again, nothing to upload", t_again),
            ("skopeo copy oci: docker:// x 8", t_skopeo),
            ("curl: every blob at once, mounts, manifests", t_curl),
        ]

    print()
    print(f"link: {LATENCY * 1000:.0f} ms each way, {BANDWIDTH / 1e6:.0f} MB/s per connection")
    print(f"images: {IMAGES} x {SHARED + OWN} gzip layers of {layer_size / (1 << 20):.0f} MiB "
          f"({SHARED} shared); medians of {reps}")  # fmt: skip
    for label, seconds in rows:
        print(f"  {label:<46} {seconds:7.2f} s")
    print()
    print(f"  skopeo x 8 / hatchway (jobs 8)              {t_skopeo / t_h8:6.1f}x  (target >= 8)")
    print(f"  skopeo x 8 / hatchway (jobs 64)             {t_skopeo / t_h64:6.1f}x")
    print(f"  hatchway (jobs 8) / curl bound              {t_h8 / t_curl:6.2f}x")
    print(f"  hatchway (jobs 64) / curl bound             {t_h64 / t_curl:6.2f}x  (target <= 1.3)")
    print(json.dumps({label: round(seconds, 3) for label, seconds in rows}))


if __name__ == "__main__":
    main()
