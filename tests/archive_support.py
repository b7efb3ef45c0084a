"""Archives for the archive-source, load and verify tests: hatchway's own in every format,
and hand-made ones with exactly the damage a test needs."""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

import hatchway
from tests.support import Family, uncompressed

#: What the bundles hold: images sharing layers, a Docker-media-type one, a registry-named one.
NAMES = ["app", "tools", "busybox", "127.0.0.1:5000/other:v1"]
#: Every archive format hatchway writes and reads.
FORMATS = ["docker", "docker-1.10", "docker-legacy"]


async def save(family: Family, out: Path, names: list[str] = NAMES, **options: object) -> Path:
    """``hatchway.save`` of ``names`` from the family store into ``out``; returns ``out``."""
    await hatchway.save(names, out, store=family.root, **options)  # type: ignore[arg-type]
    return out


def save_sync(family: Family, out: Path, names: list[str] = NAMES, **options: object) -> Path:
    """:func:`save` from a synchronous test (one that drives subprocesses)."""

    async def run() -> Path:
        return await save(family, out, names, **options)

    return anyio.run(run)


def members(path: Path) -> dict[str, bytes]:
    """Every file member's bytes (symlinks as ``-> target``), in order."""
    out: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
            elif m.issym():
                out[m.name] = f"-> {m.linkname}".encode()
    return out


Edit = Callable[[dict[str, bytes]], dict[str, bytes]]


def rewrite(
    src: Path, dst: Path, edit: Edit | None = None, *, extra: Sequence[tuple[str, bytes]] = ()
) -> Path:
    """Copy the tar ``src`` to ``dst`` member by member, file bodies passed through ``edit``
    (a dict of name → bytes; drop a key to drop the member), then append ``extra`` members
    verbatim (names unchecked: unsafe ones on purpose)."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(src) as tar:
        for m in tar:
            body = tar.extractfile(m) if m.isfile() else None
            entries.append((m, body.read() if body is not None else None))
    files = {m.name: data for m, data in entries if data is not None}
    if edit is not None:
        files = edit(dict(files))
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
        for m, data in entries:
            if data is not None:
                if m.name not in files:
                    continue
                data = files[m.name]
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))
            else:
                out.addfile(m)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dst


def json_edit(name: str, change: Callable[[object], object]) -> Edit:
    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        files[name] = json.dumps(change(json.loads(files[name]))).encode()
        return files

    return edit


def flip_byte(name: str) -> Edit:
    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        data = bytearray(files[name])
        data[len(data) // 2] ^= 0xFF
        files[name] = bytes(data)
        return files

    return edit


def drop(name: str) -> Edit:
    def edit(files: dict[str, bytes]) -> dict[str, bytes]:
        del files[name]
        return files

    return edit


def first_layer(path: Path) -> str:
    """The member of the first layer of the first image (from manifest.json)."""
    doc = json.loads(members(path)["manifest.json"])
    return str(doc[0]["Layers"][0])


def config_member(path: Path) -> str:
    return str(json.loads(members(path)["manifest.json"])[0]["Config"])


def layer_bytes(path: Path) -> Mapping[str, bytes]:
    """Layer contents of an archive with a manifest.json, uncompressed, by sha256 (their
    diffIDs: what re-saving keeps, whether the layers are kept as stored or uncompressed)."""
    files = members(path)
    found = {}
    for entry in json.loads(files["manifest.json"]):
        for name in entry["Layers"]:
            data = files[name]
            while data.startswith(b"-> "):
                name = posixpath.normpath(
                    posixpath.join(posixpath.dirname(name), data[3:].decode())
                )
                data = files[name]
            data = uncompressed(data)
            found["sha256:" + hashlib.sha256(data).hexdigest()] = data
    return found
