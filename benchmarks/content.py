"""Deterministic benchmark content and the OCI layouts built from it.

Layer content has to be generated quickly (GiBs of it) and must behave like real layer content
under gzip: not random noise, which deflate stores verbatim so that "decompression" becomes a
memcpy, and not zeros or a repeated block, which deflate squashes to nothing.  Each 1 MiB chunk
interleaves 96-byte words drawn from a small per-layer vocabulary of random words (deflate finds
them as back-references inside its 32 KiB window) with 32 fresh bytes from a skewed 64-letter
alphabet (literals only Huffman coding can shrink).  Level-1 gzip makes it ~35 % of its size and
zlib inflates it at ~200-250 MB/s on this machine: the same order as typical layer content.
Every layer has its own seed, so no two layers share a diffID.

Layers are built in worker processes (both cores), written once and reused while their spec
file matches (``run.py --keep`` keeps them between runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from hatchway.model import OCI_LAYER
from hatchway.testing.layout import BuiltLayer, CompressionName, LayoutBuilder

CHUNK = 1 << 20
_WORD, _FRESH, _VOCABULARY = 96, 32, 128
_ALPHABET = bytes((i * i // 256) % 64 + 32 for i in range(256))
#: Bump when the generator changes, so cached layouts are rebuilt.
GENERATOR_VERSION = 1


def content_chunks(seed: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of layer-like content for ``seed``, in chunks of at most ``CHUNK``."""
    rng = random.Random(seed)
    vocabulary = [rng.randbytes(_WORD) for _ in range(_VOCABULARY)]
    per_chunk = CHUNK // (_WORD + _FRESH)
    remaining = size
    while remaining > 0:
        picks = rng.randbytes(per_chunk)
        fresh = rng.randbytes(per_chunk * _FRESH).translate(_ALPHABET)
        parts: list[bytes] = []
        for k in range(per_chunk):
            parts.append(vocabulary[picks[k] % _VOCABULARY])
            parts.append(fresh[k * _FRESH : (k + 1) * _FRESH])
        chunk = b"".join(parts)[:remaining]
        remaining -= len(chunk)
        yield chunk


def write_layer_tar(path: Path, seed: int, size: int) -> tuple[str, int]:
    """Write a tar holding one file of about ``size`` bytes; return its (sha256 digest, size)."""
    payload = max(size - 3 * 512, 1)
    info = tarfile.TarInfo(f"bench/layer-{seed}.bin")
    info.size = payload
    info.mode = 0o644
    info.mtime = 0
    header = info.tobuf(tarfile.USTAR_FORMAT)
    hasher = hashlib.sha256()
    written = 0

    def put(data: bytes) -> None:
        nonlocal written
        hasher.update(data)
        out.write(data)
        written += len(data)

    with open(path, "wb") as out:
        put(header)
        for chunk in content_chunks(seed, payload):
            put(chunk)
        put(b"\0" * (-payload % 512) + b"\0" * 1024)
    return "sha256:" + hasher.hexdigest(), written


@dataclass(frozen=True)
class LayerSpec:
    seed: int
    size: int


def _build_layer(
    work: Path, spec: LayerSpec, compressions: tuple[CompressionName, ...]
) -> dict[str, tuple[BuiltLayer, str]]:
    """In a worker: build ``spec`` in each compression; return each layer and its blob file."""
    part = work / "parts" / str(spec.seed)
    part.mkdir(parents=True, exist_ok=True)
    tar = part / "layer.tar"
    diff_id, size = write_layer_tar(tar, spec.seed, spec.size)
    built: dict[str, tuple[BuiltLayer, str]] = {}
    for compression in compressions:
        if compression == "none":
            continue
        builder = LayoutBuilder(part / compression)
        layer = builder.layer_from_file(tar, compression=compression, level=1)
        built[compression] = (layer, str(builder.blob_path(layer.digest)))
    if "none" in compressions:
        built["none"] = (BuiltLayer(diff_id, size, diff_id, "none", OCI_LAYER), str(tar))
    return built


def build_layers(
    work: Path, specs: Sequence[LayerSpec], compressions: tuple[CompressionName, ...]
) -> list[dict[str, tuple[BuiltLayer, str]]]:
    """Build every layer of ``specs`` (two worker processes); blobs stay under ``work/parts``."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_build_layer, work, spec, compressions) for spec in specs]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class ImageSpec:
    """An image of the benchmark: its tag (``bench:<tag>``) and its layers' seeds."""

    tag: str
    seeds: tuple[int, ...]


def build_store(
    root: Path,
    images: Sequence[ImageSpec],
    sizes: dict[int, int],
    compression: CompressionName,
    layers: dict[int, tuple[BuiltLayer, str]],
) -> None:
    """An OCI layout at ``root`` holding ``images``; layer blobs are moved in from ``layers``."""
    builder = LayoutBuilder(root)
    for image in images:
        built = []
        for seed in image.seeds:
            layer, blob = layers[seed]
            target = builder.blob_path(layer.digest)
            if not target.exists():
                os.replace(blob, target)
            built.append(layer)
        builder.tag(builder.image(built), f"bench:{image.tag}")
    builder.save()
    _spec_path(root).write_text(_spec_text(images, sizes, compression))


def store_is_current(
    root: Path, images: Sequence[ImageSpec], sizes: dict[int, int], compression: str
) -> bool:
    """Whether ``root`` was built from exactly this spec (and so can be reused)."""
    spec = _spec_path(root)
    return spec.exists() and spec.read_text() == _spec_text(images, sizes, compression)


def blob_files(root: Path) -> list[str]:
    """Every blob file of the layout at ``root`` (to warm the page cache with)."""
    return [str(p) for p in (root / "blobs" / "sha256").iterdir() if p.is_file()]


def layer_blob_files(root: Path, tag: str) -> list[str]:
    """The layer blob files of ``bench:<tag>`` in ``root``, in manifest order."""
    index = json.loads((root / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.loads(_blob(root, entry["digest"]).read_text())
            return [str(_blob(root, layer["digest"])) for layer in manifest["layers"]]
    raise KeyError(tag)


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _spec_path(root: Path) -> Path:
    return root / ".bench-spec.json"


def _spec_text(images: Sequence[ImageSpec], sizes: dict[int, int], compression: str) -> str:
    return json.dumps(
        {
            "generator": GENERATOR_VERSION,
            "compression": compression,
            "images": [asdict(i) for i in images],
            "sizes": {str(k): v for k, v in sorted(sizes.items())},
        },
        sort_keys=True,
    )


def ensure_stores(
    work: Path,
    name: str,
    images: Sequence[ImageSpec],
    sizes: dict[int, int],
    compressions: tuple[CompressionName, ...],
    log: Callable[[str], None],
) -> dict[str, Path]:
    """The layouts ``work/<name>-<compression>`` holding ``images``, built unless current."""
    roots: dict[str, Path] = {c: work / f"{name}-{c}" for c in compressions}
    if all(store_is_current(roots[c], images, sizes, c) for c in compressions):
        log(f"reusing {', '.join(str(r) for r in roots.values())}")
        return roots
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)
    seeds = sorted({seed for image in images for seed in image.seeds})
    total = sum(sizes[s] for s in seeds)
    log(f"generating {len(seeds)} layers, {total / 2**20:.0f} MiB, as {'/'.join(compressions)}")
    built = build_layers(work, [LayerSpec(s, sizes[s]) for s in seeds], compressions)
    for compression in compressions:
        layers = {seed: b[compression] for seed, b in zip(seeds, built, strict=True)}
        build_store(roots[compression], images, sizes, compression, layers)
    shutil.rmtree(work / "parts", ignore_errors=True)
    return roots


def tiny_layer_store(work: Path, images: int, layers: int = 10) -> tuple[Path, list[str]]:
    """A store of ``images`` images of ``layers`` tiny distinct gzip layers each, built once
    under ``work`` (the metadata-heavy workload of a thousand images), and its names."""
    root = work / f"many-{images}x{layers}"
    names = [f"many/img{i}:1" for i in range(images)]
    if (root / "index.json").exists():
        return root, names
    shutil.rmtree(root, ignore_errors=True)
    b = LayoutBuilder(root)
    for i in range(images):
        built = [b.layer({f"img{i}/layer{k}": f"{i}-{k}\n".encode() * 8}) for k in range(layers)]
        b.tag(b.image(built), names[i])
    b.save()
    return root, names
