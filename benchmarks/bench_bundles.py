"""Benchmarks of issue 8 (bundles): compressed save, verify, load.

e. ``hatchway save -o x.tar.zst`` of the 4 x 256 MiB uncompressed layers (1 GiB) against
   ``zstd -T0 -3`` alone on the plain archive hatchway writes for the same image (what one
   would otherwise pipe through): compression is the bound, fetching and writing overlap it.
   Reference lines: the plain ``hatchway save -o x.tar``, and gzip (``-o x.tar.gz``) against
   ``pigz``-less ``gzip -1`` (single-threaded, the usual pipe).
f. ``hatchway verify`` of that plain 1 GiB archive against ``sha256sum`` of the same file (one
   pass over the bytes, one core).  References: ``openssl dgst -sha256`` (Debian's coreutils
   hash in portable C; OpenSSL, like Python's hashlib, uses the CPU's SHA instructions) and
   ``hatchway verify`` of the ``.tar.zst``.
g. ``hatchway load`` of an 8-image bundle (a shared 128 MiB base and 8 own 32 MiB layers, all
   uncompressed as ``docker save`` writes them) into a fresh store, against
   ``skopeo copy docker-archive:BUNDLE:bench:iN oci:DIR:iN`` once per image into one OCI
   directory (what one does without ``load``), summed.

Outputs are removed (and written back with ``sync``) between runs, outside the timing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from content import ImageSpec, ensure_stores, layer_blob_files
from measure import Contender, median, round_robin, run_child, warm
from report import Row, Section, Target
from tools import Tools

LAYERS = 4
LOAD_IMAGES = 8


def run(
    tools: Tools,
    work: Path,
    *,
    layer_size: int,
    base_size: int,
    own_size: int,
    reps: int,
    log: Callable[[str], None],
) -> list[Section]:
    seeds = tuple(range(1, LAYERS + 1))
    roots = ensure_stores(
        work, "local", [ImageSpec("local", seeds)], dict.fromkeys(seeds, layer_size), ("none",), log
    )
    root = roots["none"]
    plain = work / "bundle-plain.tar"
    if not plain.exists():
        tools.hatchway_save(root, plain, "bench:local")
    packed = work / "bundle-ref.tar.zst"
    run_child(
        [tools.hatchway, "save", "--store", str(root), "-q", "-o", str(packed), "bench:local"]
    )
    sections = [
        _save_zstd(tools, root, plain, work, reps, log),
        _verify(tools, plain, packed, reps, log),
        _load(tools, work, base_size=base_size, own_size=own_size, reps=reps, log=log),
    ]
    for path in (plain, packed):
        path.unlink(missing_ok=True)
    return sections


def _remove(*paths: Path) -> Callable[[], None]:
    def clean() -> None:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    return clean


def _save_zstd(
    tools: Tools, root: Path, plain: Path, work: Path, reps: int, log: Callable[[str], None]
) -> Section:
    blobs = layer_blob_files(root, "local")
    warm([*blobs, str(plain)])
    size = plain.stat().st_size
    log(f"e. save -o x.tar.zst: {size / 2**30:.2f} GiB archive, {reps} reps")
    zst, gz, tar, ref = (work / n for n in ("o.tar.zst", "o.tar.gz", "o.tar", "ref.tar.zst"))
    save = [tools.hatchway, "save", "--store", str(root), "-q"]
    contenders = [
        Contender(
            "hatchway save -o x.tar.zst",
            lambda: run_child([*save, "-o", str(zst), "bench:local"]),
            _remove(zst),
        ),
        Contender(
            "zstd -T0 -3 (the plain archive)",
            lambda: run_child(["zstd", "-T0", "-3", "-q", "-f", str(plain), "-o", str(ref)]),
            _remove(ref),
        ),
        Contender(
            "hatchway save -o x.tar",
            lambda: run_child([*save, "-o", str(tar), "bench:local"]),
            _remove(tar),
        ),
        Contender(
            "hatchway save -o x.tar.gz",
            lambda: run_child([*save, "-o", str(gz), "bench:local"]),
            _remove(gz),
        ),
        Contender(
            "gzip -1 (the plain archive)",
            lambda: run_child(["gzip", "-1", "-c", str(plain)], stdout_path=str(gz)),
            _remove(gz),
        ),
    ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    section = Section(
        "save-zstd", f"e. Compressed bundle, 4 x {size // LAYERS // 2**20} MiB uncompressed layers"
    )
    notes = {
        "hatchway save -o x.tar": "reference: no compression",
        "hatchway save -o x.tar.gz": "reference: ISA-L, threaded, level 2",
        "gzip -1 (the plain archive)": "reference: single-threaded",
    }
    section.rows = [Row(n, med[n], reps, notes.get(n, "")) for n in med]
    h, z = med["hatchway save -o x.tar.zst"].wall, med["zstd -T0 -3 (the plain archive)"].wall
    section.targets = [Target("hatchway .tar.zst / zstd -T0 -3", h / z, 1.1, "<=")]
    section.notes.append(
        f"zstd alone does not produce the plain archive first: hatchway's total against "
        f"`save -o x.tar` then `zstd` is {h / (z + med['hatchway save -o x.tar'].wall):.2f}x."
    )
    return section


def _verify(
    tools: Tools, plain: Path, packed: Path, reps: int, log: Callable[[str], None]
) -> Section:
    warm([str(plain), str(packed)])
    log(f"f. verify: {plain.stat().st_size / 2**30:.2f} GiB plain archive, {reps} reps")
    contenders = [
        Contender(
            "hatchway verify", lambda: run_child([tools.hatchway, "verify", "-q", str(plain)])
        ),
        Contender("sha256sum", lambda: run_child(["sha256sum", str(plain)])),
        Contender(
            "openssl dgst -sha256", lambda: run_child(["openssl", "dgst", "-sha256", str(plain)])
        ),
        Contender(
            "hatchway verify (.tar.zst)",
            lambda: run_child([tools.hatchway, "verify", "-q", str(packed)]),
        ),
    ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    section = Section("verify", "f. Verifying a 1 GiB plain bundle")
    notes = {
        "hatchway verify (.tar.zst)": "reference: unpacks into $TMPDIR first",
        "openssl dgst -sha256": "reference: one core, with the CPU's SHA instructions",
    }
    section.rows = [Row(n, med[n], reps, notes.get(n, "")) for n in med]
    section.targets = [
        Target(
            "hatchway verify / sha256sum",
            med["hatchway verify"].wall / med["sha256sum"].wall,
            1.5,
            "<=",
        )
    ]
    return section


def _load(
    tools: Tools,
    work: Path,
    *,
    base_size: int,
    own_size: int,
    reps: int,
    log: Callable[[str], None],
) -> Section:
    base = 100
    images = [ImageSpec(f"i{i}", (base, base + 1 + i)) for i in range(LOAD_IMAGES)]
    sizes = {base: base_size} | {base + 1 + i: own_size for i in range(LOAD_IMAGES)}
    root = ensure_stores(work, "load", images, sizes, ("none",), log)["none"]
    bundle = work / "load-bundle.tar"
    names = [f"bench:{image.tag}" for image in images]
    if not bundle.exists():
        tools.hatchway_save(root, bundle, *names)
    warm([str(bundle)])
    log(
        f"g. load: {LOAD_IMAGES} images, {bundle.stat().st_size / 2**20:.0f} MiB bundle, "
        f"{reps} reps"
    )
    store, oci = work / "load-store", work / "load-oci"
    skopeo = tools.skopeo or "skopeo"
    loop = " && ".join(
        f'{skopeo} --policy "$0" copy --quiet docker-archive:"$1":{n} oci:"$2":{n.split(":")[1]}'
        for n in names
    )
    contenders = [
        Contender(
            "hatchway load",
            lambda: run_child([tools.hatchway, "load", "-q", "--store", str(store), str(bundle)]),
            _remove(store),
        ),
        Contender(
            f"skopeo copy x {LOAD_IMAGES}",
            lambda: run_child(["sh", "-c", loop, str(tools.policy), str(bundle), str(oci)]),
            _remove(oci),
        ),
    ]
    samples = round_robin(contenders, reps, log)
    med = {name: median(s) for name, s in samples.items()}
    section = Section(
        "load",
        f"g. Loading an {LOAD_IMAGES}-image bundle ({base_size // 2**20} MiB shared base + "
        f"{LOAD_IMAGES} x {own_size // 2**20} MiB)",
    )
    notes = {
        f"skopeo copy x {LOAD_IMAGES}": "`skopeo copy docker-archive:B:NAME oci:DIR:TAG` per image"
    }
    section.rows = [Row(n, med[n], reps, notes.get(n, "")) for n in med]
    section.targets = [
        Target(
            "skopeo (per image, summed) / hatchway load",
            med[f"skopeo copy x {LOAD_IMAGES}"].wall / med["hatchway load"].wall,
            3.0,
            ">=",
        )
    ]
    bundle.unlink(missing_ok=True)
    return section
