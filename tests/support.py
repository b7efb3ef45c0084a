"""Test support: a standard store of related images, and archive readers for assertions."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hatchway.testing.layout import BuiltImage, BuiltLayer, LayoutBuilder


@dataclass
class Family:
    """Images that share ancestors at several depths, all in one OCI layout at ``root``.

    ``app:1.0`` = base + l1; ``app:2.0`` = ``app:latest`` = base + l1 + l2;
    ``tools:latest`` = base + l3; ``busybox:latest`` (Docker schema 2 media types, named
    ``docker.io/library/busybox:latest``) = base2; ``127.0.0.1:5000/other:v1`` =
    base + l1 + l2 + l4; ``multi:latest`` = an index of linux/amd64 and linux/arm64/v8;
    and one entry named only by the bare tag ``orphan`` (no repository).
    """

    root: Path
    builder: LayoutBuilder
    layers: dict[str, BuiltLayer]
    images: dict[str, BuiltImage]


def build_family(root: Path) -> Family:
    b = LayoutBuilder(root)
    L = {
        "base": b.layer({"etc/os-release": b"ID=family\n", "bin/": None}, compression="gzip"),
        "l1": b.layer({"app/one": b"one\n"}, compression="zstd"),
        "l2": b.layer({"app/two": b"two\n" * 1000}, compression="none"),
        "l3": b.layer({"tools/t": b"tool\n"}, compression="gzip"),
        "l4": b.layer({"other/o": bytes(range(256)) * 64}, compression="gzip"),
        "base2": b.layer({"bin/busybox": b"not really busybox\n"}, compression="gzip"),
        "arm": b.layer({"arch": b"arm64\n"}, compression="gzip"),
        "amd": b.layer({"arch": b"amd64\n"}, compression="gzip"),
        "orphan": b.layer({"orphan": b"o\n"}, compression="none"),
    }
    img = {
        "app1": b.image([L["base"], L["l1"]], created="2024-02-01T10:00:00Z"),
        "app2": b.image([L["base"], L["l1"], L["l2"]], created="2024-03-01T10:00:00.123456789Z"),
        "tools": b.image([L["base"], L["l3"]], created="2024-04-01T00:00:00+02:00"),
        "busybox": b.image([L["base2"]], docker=True, created="2023-05-05T05:05:05Z"),
        "other": b.image([L["base"], L["l1"], L["l2"], L["l4"]], created="2024-06-01T00:00:00Z"),
        "amd64": b.image([L["amd"]], architecture="amd64"),
        "arm64": b.image([L["arm"]], architecture="arm64", variant="v8"),
        "orphan": b.image([L["orphan"]], created="2022-01-01T00:00:00Z"),
    }
    img["multi"] = b.index([img["amd64"], img["arm64"]])
    b.tag(img["app1"], "app:1.0")
    b.tag(img["app2"], "app:2.0")
    b.tag(img["app2"], "app:latest")
    b.tag(img["tools"], "tools:latest", style="ref")
    b.tag(img["busybox"], "docker.io/library/busybox:latest", style="containerd")
    b.tag(img["other"], "127.0.0.1:5000/other:v1")
    b.tag(img["multi"], "multi:latest")
    b.tag(img["orphan"], "orphan", style="ref")
    b.save()
    return Family(root, b, L, img)


@dataclass
class Archive:
    """A parsed archive: members in order, with their bytes."""

    members: list[tarfile.TarInfo]
    data: dict[str, bytes]

    @property
    def names(self) -> list[str]:
        return [m.name.rstrip("/") for m in self.members]

    def json(self, name: str) -> Any:
        return json.loads(self.data[name])

    def member(self, name: str) -> tarfile.TarInfo:
        return next(m for m in self.members if m.name.rstrip("/") == name)


def read_archive(raw: bytes) -> Archive:
    members: list[tarfile.TarInfo] = []
    data: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for m in tar:
            members.append(m)
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                data[m.name] = f.read()
    return Archive(members, data)


def uncompressed(data: bytes) -> bytes:
    """A layer's bytes uncompressed (as stored: gzip, zstd or plain)."""
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 30)
    return data


def files_under(path: Path) -> list[str]:
    """Every file and directory below ``path`` (relative), to prove nothing was left."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


class ProbeSource:
    """A blob source wrapper that runs ``hook(digest)`` before each blob is served.

    With ``local=False`` it hides the inner source's files, so the engine streams every blob
    as it would from a network store.  ``reads`` counts blob reads (streams or local paths).
    """

    def __init__(self, inner: Any, hook: Any, local: bool, reads: dict[str, int]) -> None:
        self._inner = inner
        self._hook = hook
        self._local = local
        self.reads = reads
        self.description = inner.description
        self.capabilities = replace(
            inner.capabilities, local_files=local and inner.capabilities.local_files
        )

    def size_hint(self, descriptor: Any) -> Any:
        return self._inner.size_hint(descriptor)

    def local_file(self, descriptor: Any) -> Any:
        if not self._local:
            return None
        self.reads[descriptor.digest] = self.reads.get(descriptor.digest, 0) + 1
        return self._inner.local_file(descriptor)

    @asynccontextmanager
    async def open_blob(self, descriptor: Any) -> AsyncIterator[AsyncIterator[bytes]]:
        self.reads[descriptor.digest] = self.reads.get(descriptor.digest, 0) + 1
        if self._hook is not None:
            await self._hook(descriptor.digest)
        async with self._inner.open_blob(descriptor) as chunks:
            yield chunks


class ProbeStore:
    """A store wrapper: ``resolve_hook`` runs before each resolution; blobs go through
    :class:`ProbeSource`."""

    def __init__(
        self, inner: Any, *, blob_hook: Any = None, resolve_hook: Any = None, local: bool = True
    ) -> None:
        self._inner = inner
        self._blob_hook = blob_hook
        self._resolve_hook = resolve_hook
        self._local = local
        self.reads: dict[str, int] = {}
        self.description = inner.description

    async def resolve(self, query: Any, platform: Any) -> list[Any]:
        if self._resolve_hook is not None:
            await self._resolve_hook(query.text)
        images = await self._inner.resolve(query, platform)
        return [
            replace(i, source=ProbeSource(i.source, self._blob_hook, self._local, self.reads))
            for i in images
        ]

    async def aclose(self) -> None:
        await self._inner.aclose()


def fresh_interpreter(code: str) -> list[str]:
    """The lines ``code`` prints when run by a new interpreter (imports start from nothing)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


class StagingWatch:
    """A progress callback that looks into the staging area ``stage`` whenever a layer is
    done: :attr:`staged` is what it found there each time (files in its subdirectories)."""

    def __init__(self, stage: Path) -> None:
        stage.mkdir()
        self.stage = stage
        self.staged: list[list[str]] = []

    def __call__(self, event: object) -> None:
        from hatchway import LayerDone

        if isinstance(event, LayerDone):
            self.staged.append([p for p in files_under(self.stage) if "/" in p])

    @property
    def never_staged(self) -> bool:
        return bool(self.staged) and all(files == [] for files in self.staged)
