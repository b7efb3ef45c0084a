"""Build OCI image layouts on disk: for tests, benchmarks and the sample store.

Synchronous and deterministic (fixed mtimes, uid 0, gzip without a timestamp), so the same
calls always produce the same digests.  Not part of the archive path; it writes files with
plain blocking I/O because it runs before any event loop does.

    b = LayoutBuilder(tmp / "store")
    base = b.layer({"etc/os-release": b"ID=sample\\n"})
    app = b.image([base, b.layer({"app/run": b"#!/bin/sh\\n"}, compression="zstd")])
    b.tag(app, "app:1.0")
    b.save()
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zstandard

from hatchway.model import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)
from hatchway.oci_layout import (
    IMAGE_NAME_ANNOTATION,
    INDEX_NAME,
    OCI_LAYOUT_BYTES,
    REF_NAME_ANNOTATION,
    index_document,
)

CompressionName = Literal["gzip", "zstd", "none"]
_DOCKER_LAYER = {
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "none": "application/vnd.docker.image.rootfs.diff.tar",
}


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class BuiltLayer:
    digest: str
    size: int
    diff_id: str
    compression: CompressionName
    media_type: str

    def descriptor(self, docker: bool = False) -> dict[str, Any]:
        media_type = self.media_type
        if docker:
            media_type = _DOCKER_LAYER.get(self.compression, media_type)
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class BuiltImage:
    """A manifest (or index) in the layout; ``config_digest`` is the image ID."""

    digest: str
    size: int
    media_type: str
    config_digest: str
    layers: tuple[BuiltLayer, ...] = ()
    platform: dict[str, str] | None = None

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform
        return d


def layer_tar(files: Mapping[str, bytes | Symlink | None], mtime: int = 0) -> bytes:
    """A deterministic tar of ``files`` (``None`` makes a directory), parents implied."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    tar.addfile(_info(d + "/", tarfile.DIRTYPE, 0o755, mtime))
            value = files[name]
            if value is None:
                directory = "/".join(parts)
                if directory not in dirs:
                    dirs.add(directory)
                    tar.addfile(_info(directory + "/", tarfile.DIRTYPE, 0o755, mtime))
            elif isinstance(value, Symlink):
                info = _info(name, tarfile.SYMTYPE, 0o777, mtime)
                info.linkname = value.target
                tar.addfile(info)
            else:
                mode = 0o755 if value.startswith(b"#!") or value.startswith(b"\x7fELF") else 0o644
                info = _info(name, tarfile.REGTYPE, mode, mtime)
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return buf.getvalue()


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class LayoutBuilder:
    """Write blobs, manifests and ``index.json`` of an OCI image layout rooted at ``root``."""

    root: Path
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_bytes(OCI_LAYOUT_BYTES)

    def blob(self, data: bytes) -> str:
        digest = _digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.write_bytes(data)
        return digest

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def layer(
        self,
        files: Mapping[str, bytes | Symlink | None],
        *,
        compression: CompressionName = "gzip",
        mtime: int = 0,
    ) -> BuiltLayer:
        return self.layer_from_tar(layer_tar(files, mtime), compression=compression)

    def layer_from_tar(self, tar: bytes, *, compression: CompressionName = "gzip") -> BuiltLayer:
        diff_id = _digest(tar)
        if compression == "gzip":
            stored = gzip.compress(tar, compresslevel=6, mtime=0)
            media_type = OCI_LAYER + "+gzip"
        elif compression == "zstd":
            stored = zstandard.ZstdCompressor(level=3).compress(tar)
            media_type = OCI_LAYER + "+zstd"
        else:
            stored = tar
            media_type = OCI_LAYER
        digest = self.blob(stored)
        return BuiltLayer(digest, len(stored), diff_id, compression, media_type)

    def layer_from_file(
        self, tar_path: Path, *, compression: CompressionName = "none", level: int = 1
    ) -> BuiltLayer:
        """A layer from a (large) tar file on disk, streamed: never whole in memory."""
        diff_hash, blob_hash = hashlib.sha256(), hashlib.sha256()
        tmp = self.root / "blobs" / "sha256" / ".incoming"
        size = 0
        compressor: Any = None
        if compression == "gzip":
            compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        elif compression == "zstd":
            compressor = zstandard.ZstdCompressor(level=level).compressobj()
        with open(tar_path, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                diff_hash.update(chunk)
                data = compressor.compress(chunk) if compressor else chunk
                blob_hash.update(data)
                out.write(data)
                size += len(data)
            if compressor:
                data = compressor.flush()
                blob_hash.update(data)
                out.write(data)
                size += len(data)
        digest = "sha256:" + blob_hash.hexdigest()
        tmp.replace(self.blob_path(digest))
        media_type = {"gzip": OCI_LAYER + "+gzip", "zstd": OCI_LAYER + "+zstd"}.get(
            compression, OCI_LAYER
        )
        return BuiltLayer(digest, size, "sha256:" + diff_hash.hexdigest(), compression, media_type)

    def image(
        self,
        layers: Sequence[BuiltLayer],
        *,
        created: str = "2024-01-01T00:00:00Z",
        os: str = "linux",
        architecture: str = "amd64",
        variant: str | None = None,
        cmd: Sequence[str] | None = None,
        docker: bool = False,
        config_extra: Mapping[str, Any] | None = None,
    ) -> BuiltImage:
        """An image manifest (OCI, or Docker schema 2 with ``docker=True``) and its config."""
        config: dict[str, Any] = {
            "architecture": architecture,
            "os": os,
            "created": created,
            "config": {"Cmd": list(cmd or ["/bin/sh"]), "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
            "history": [
                {"created": created, "created_by": f"layer {i}"} for i in range(len(layers))
            ],
        }
        if variant:
            config["variant"] = variant
        config.update(config_extra or {})
        raw_config = json.dumps(config, sort_keys=True).encode()
        config_digest = self.blob(raw_config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": config_digest,
                "size": len(raw_config),
            },
            "layers": [la.descriptor(docker) for la in layers],
        }
        raw = json.dumps(manifest).encode()
        platform = {"os": os, "architecture": architecture}
        if variant:
            platform["variant"] = variant
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        return BuiltImage(
            self.blob(raw), len(raw), media_type, config_digest, tuple(layers), platform
        )

    def index(self, images: Sequence[BuiltImage], *, docker: bool = False) -> BuiltImage:
        """A multi-platform index over ``images`` (each carries its platform)."""
        doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST if docker else OCI_INDEX,
            "manifests": [i.descriptor() for i in images],
        }
        raw = json.dumps(doc).encode()
        return BuiltImage(self.blob(raw), len(raw), DOCKER_LIST if docker else OCI_INDEX, "")

    def tag(
        self,
        image: BuiltImage,
        name: str | None,
        *,
        style: Literal["containerd", "ref", "both"] = "both",
    ) -> None:
        """Add an ``index.json`` entry for ``image``, named in the given annotation style.

        ``containerd``: ``io.containerd.image.name`` as written (use a full reference);
        ``ref``: ``org.opencontainers.image.ref.name`` only; ``both``: the qualified name in
        the former and the tag in the latter, as containerd and Docker write them.
        """
        entry = {"mediaType": image.media_type, "digest": image.digest, "size": image.size}
        if name is not None:
            if style == "containerd":
                entry["annotations"] = {IMAGE_NAME_ANNOTATION: name}
            elif style == "ref":
                entry["annotations"] = {REF_NAME_ANNOTATION: name}
            else:
                entry["annotations"] = {
                    IMAGE_NAME_ANNOTATION: _qualify(name),
                    REF_NAME_ANNOTATION: name.rsplit(":", 1)[-1],
                }
        self.entries.append(entry)

    def save(self) -> None:
        doc = index_document(self.entries)
        (self.root / INDEX_NAME).write_text(json.dumps(doc, indent=2) + "\n")


def _qualify(name: str) -> str:
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if "/" in name else "library/" + name)
