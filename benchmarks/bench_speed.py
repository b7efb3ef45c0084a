"""Speed to the limit (issue 10): real content, a thousand images, peak RSS.

Workloads, each measured side by side in one run (round-robin, medians; benchmarks/measure.py):

* **real content, local**: a Debian root filesystem built by ``mmdebstrap --variant=minbase``
  (the base layer, gzip) plus an upper layer of real files of this machine, one image:
  ``hatchway save`` vs ``skopeo copy oci:… docker-archive:`` (target ≥ 3x, as benchmark b);
* **a thousand images**: 1 000 images x 10 tiny layers in one store, saved at once, vs one
  of those images alone (target ≤ 8x one image, ≤ 64 MiB peak RSS);
* **real content behind a slow link**: the same images pushed into docker-registry behind the
  test fault proxy (50 ms each way, 25 MB/s per connection): ``hatchway save`` of 8 images
  (the Debian base + 8 uppers) vs curl fetching every blob in parallel — the link's bound
  (target ≤ 1.15x);

with the peak RSS of every hatchway run.

Run: ``python benchmarks/bench_speed.py [--quick] [--only real,many,link] [--reps N]``.
Needs mmdebstrap, skopeo, docker-registry and curl (Debian packages).  Data lives in
``benchmarks/.work/`` (the rootfs tar is built once and kept).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from content import tiny_layer_store  # noqa: E402
from measure import Contender, Sample, median, round_robin, run_child, warm  # noqa: E402
from tools import Tools  # noqa: E402

from hatchway.testing import BuiltImage, LayoutBuilder  # noqa: E402

MiB = 1 << 20
UPPERS = [
    "/usr/lib/python3/dist-packages",
    "/usr/share/locale",
    "/usr/share/doc",
    "/usr/share/zoneinfo",
    "/usr/lib/x86_64-linux-gnu/perl",
    "/usr/share/perl",
    "/usr/share/i18n",
    "/usr/share/man",
]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rootfs_tar(work: Path) -> Path:
    """A Debian bookworm minbase root filesystem as a tar (built once, ~170 MB)."""
    tar = work / "rootfs.tar"
    if not tar.exists():
        _log("building a Debian rootfs with mmdebstrap (about a minute) ...")
        partial = tar.with_suffix(".partial")
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet",
             "bookworm", partial],
            check=True,
        )  # fmt: skip
        partial.rename(tar)
    return tar


def tree_tar(directory: str, limit: int) -> bytes:
    """A deterministic tar of the real files under ``directory`` (at most ``limit`` bytes of
    file content), uid 0, mtime 0."""
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(Path(directory).rglob("*")):
            if not path.is_file() or path.is_symlink() or total > limit:
                continue
            data = path.read_bytes()
            total += len(data)
            info = tarfile.TarInfo(str(path).lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def real_store(work: Path, quick: bool) -> tuple[Path, list[str]]:
    """The Debian base (gzip) + one upper layer of real files per image, 8 images."""
    root = work / ("real-store-quick" if quick else "real-store")
    names = [f"real/app{i}:1" for i in range(len(UPPERS))]
    if (root / "index.json").exists():
        return root, names
    shutil.rmtree(root, ignore_errors=True)
    b = LayoutBuilder(root)
    base = b.layer_from_file(rootfs_tar(work), compression="gzip", level=6)
    for i, directory in enumerate(UPPERS):
        upper = b.layer_from_tar(tree_tar(directory, (1 if quick else 12) * MiB))
        b.tag(b.image([base, upper], created="2026-01-01T00:00:00Z"), names[i])
    b.save()
    return root, names


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB"


def bench_real(tools: Tools, work: Path, quick: bool, reps: int) -> list[str]:
    root, names = real_store(work, quick)
    warm([str(p) for p in (root / "blobs" / "sha256").iterdir()])
    out_h, out_s = work / "real-h.tar", work / "real-s.tar"
    contenders = [
        Contender("hatchway", lambda: tools.hatchway_save(root, out_h, names[0]), _rm(out_h)),
        Contender("skopeo", lambda: _skopeo(tools, root, names[0], out_s), _rm(out_s)),
    ]
    samples = round_robin(contenders, reps, _log)
    h, s = median(samples["hatchway"]), median(samples["skopeo"])
    return [
        "| real content, local, 1 image | hatchway | skopeo | skopeo/hatchway | hatchway RSS |",
        "|---|---:|---:|---:|---:|",
        f"| Debian base + upper | {h.wall:.2f} s | {s.wall:.2f} s | {s.wall / h.wall:.2f}x "
        f"| {_mib(h.maxrss)} |",
    ]


def _skopeo(tools: Tools, root: Path, name: str, out: Path) -> Sample:
    # skopeo's oci:DIR:REF matches org.opencontainers.image.ref.name, which LayoutBuilder
    # writes as the tag alone ("1"), the same for all 8 images: give skopeo a copy of the
    # store whose index.json holds only the image to save.
    single = root.parent / (root.name + "-single")
    if not single.exists():
        subprocess.run([sys.executable, "-c", _SINGLE, str(root), str(single), name], check=True)
    return tools.skopeo_save(single, "1", out)


_SINGLE = """
import json, shutil, sys
from pathlib import Path
src, dst, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
shutil.copytree(src, dst, symlinks=True)
doc = json.loads((dst / "index.json").read_text())
doc["manifests"] = [m for m in doc["manifests"]
                    if m["annotations"]["io.containerd.image.name"].endswith(name)]
(dst / "index.json").write_text(json.dumps(doc))
"""


def _rm(*paths: Path) -> Callable[[], None]:
    def remove() -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    return remove


def bench_many(tools: Tools, work: Path, quick: bool, reps: int) -> list[str]:
    count = 100 if quick else 1000
    root, names = tiny_layer_store(work, count)
    out_all, out_one = work / "many-all.tar", work / "many-one.tar"
    contenders = [
        Contender(
            f"{count} images", lambda: tools.hatchway_save(root, out_all, *names), _rm(out_all)
        ),
        Contender("1 image", lambda: tools.hatchway_save(root, out_one, names[0]), _rm(out_one)),
    ]
    samples = round_robin(contenders, reps, _log)
    many, one = median(samples[f"{count} images"]), median(samples["1 image"])
    return [
        f"| {count} images x 10 tiny layers | all at once | one image | ratio | peak RSS |",
        "|---|---:|---:|---:|---:|",
        f"| one store | {many.wall:.2f} s | {one.wall:.2f} s | {many.wall / one.wall:.1f}x "
        f"| {_mib(many.maxrss)} |",
    ]


def bench_link(tools: Tools, work: Path, quick: bool, reps: int) -> list[str]:
    from tests.fault_proxy import fault_proxy
    from tests.peers import start_registry
    from tests.registry_support import push_image

    root, names = real_store(work, quick)
    b = LayoutBuilder(root)  # reads blobs for the push
    registry = start_registry(work / "speed-registry")
    try:
        index = json.loads((root / "index.json").read_text())["manifests"]
        blobs: dict[str, str] = {}  # digest -> a repository it was pushed to
        for entry, name in zip(index, names, strict=True):
            repo = name.split(":")[0]
            manifest = json.loads((root / "blobs" / "sha256" / entry["digest"][7:]).read_text())
            for digest in [la["digest"] for la in manifest["layers"]] + [
                manifest["config"]["digest"]
            ]:
                blobs.setdefault(digest, repo)
            built = BuiltImage(entry["digest"], entry["size"], entry["mediaType"], "")
            push_image(registry.url, repo, "1", b.root, built)
        with fault_proxy(registry.port) as proxy:
            proxy.reset(latency=0.05, bandwidth=25e6)
            out = work / "link.tar"
            refs = [f"docker://{proxy.host}/{n}" for n in names]
            argv = [tools.hatchway, "save", "-q", "-o", str(out), "--insecure-registry",
                    proxy.host, *refs]  # fmt: skip
            # --fail: a blob the registry does not serve from that repository must not
            # count as a quick fetch.
            curl = ["curl", "-s", "--fail", "--parallel", "--parallel-max", "64"]
            for digest, repo in sorted(blobs.items()):
                curl += [f"http://{proxy.host}/v2/{repo}/blobs/{digest}", "-o", "/dev/null"]
            contenders = [
                Contender("hatchway", lambda: run_child(argv), _rm(out)),
                Contender("curl", lambda: run_child(curl)),
            ]
            samples = round_robin(contenders, reps, _log)
        h, c = median(samples["hatchway"]), median(samples["curl"])
        return [
            "| real content, 8 images, 50 ms + 25 MB/s | hatchway | curl, all blobs "
            "in parallel | ratio | hatchway RSS |",
            "|---|---:|---:|---:|---:|",
            f"| registry | {h.wall:.2f} s | {c.wall:.2f} s | {h.wall / c.wall:.2f}x "
            f"| {_mib(h.maxrss)} |",
        ]
    finally:
        registry.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="real,many,link")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tools = Tools(args.work)
    only = {o.strip() for o in args.only.split(",")}
    started = time.perf_counter()
    for name, bench in (("real", bench_real), ("many", bench_many), ("link", bench_link)):
        if name in only:
            print("\n".join([*bench(tools, args.work, args.quick, args.reps), ""]), flush=True)
    _log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
