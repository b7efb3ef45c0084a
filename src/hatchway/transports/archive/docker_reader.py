"""Reading ``docker save`` archives of every era: what images an archive holds, and where.

Two layouts (docs/bundles.md, "Reading archives"):

* **manifest.json** (Docker >= 1.10, podman and skopeo ``docker-archive``, hatchway's three
  formats but docker-legacy): one entry per image — ``Config`` (the config's member),
  ``RepoTags`` (``null`` when untagged) and ``Layers`` (one member per diffID, base first).
  The config's bytes are the image (its sha256 is the image ID); a config member named after
  a digest (``<hex>.json``, ``blobs/sha256/<hex>``) must hash to it.
* **legacy** (Docker <= 1.9, hatchway's docker-legacy): no manifest.json; ``repositories``
  names the top v1 layer of each tag, and each ``<id>/json`` names its ``parent``.  There is
  no image config, so one is built as Docker's legacy loader builds it: the top layer's v1
  JSON without its v1 fields (``id``, ``parent``, ``Size``, ...) plus ``rootfs`` — whose
  diffIDs are computed by hashing every ``layer.tar`` (an extra read of each layer, at
  resolve time) — and a ``history`` entry per layer.  Such an image gets a new, stable ID.

Layers are normally stored uncompressed; a member that starts with gzip or zstd magic bytes
is described as such a blob (its digest found by hashing it), so the engine decompresses and
verifies it.  Blocking: use from worker threads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from hatchway.decode import LayerDecoder
from hatchway.errors import ArchiveDamage, InvalidReference, MalformedContent, StoreError
from hatchway.formats.plan import compact_json
from hatchway.model import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Compression,
    Descriptor,
    Layer,
    parse_json,
    parse_json_object,
)
from hatchway.reference import DEFAULT_TAG, Reference, parse_reference
from hatchway.transports.archive.tarindex import TarIndex, TarMember, sniff

_HEX64 = re.compile(r"[a-f0-9]{64}")
_BLOB_NAME = re.compile(r"blobs/sha256/([a-f0-9]{64})")
_UNKNOWN = "sha256:" + "0" * 64
_V1_FIELDS = ("id", "parent", "Size", "parent_id", "layer_id", "throwaway")
#: v1 fields that must be JSON objects (or null) when present: Docker's ``container.Config``.
_V1_OBJECTS = ("config", "container_config")
_MEDIA = {
    Compression.NONE: OCI_LAYER,
    Compression.GZIP: OCI_LAYER + "+gzip",
    Compression.ZSTD: OCI_LAYER + "+zstd",
}


@dataclass(frozen=True, slots=True)
class ArchiveLayer:
    """One layer of an archived image: its member and the blob the member holds."""

    member: TarMember
    #: The blob, when the member is compressed or was hashed; ``None`` for an uncompressed
    #: member, whose blob digest is the diffID the config lists for it.
    blob: Descriptor | None
    compression: Compression
    #: The diffID, when it is known without the config (legacy layers, which were hashed).
    diff_id: str | None = None


@dataclass(frozen=True, slots=True)
class ArchivedImage:
    """One image of a docker archive: its position (``@N``), config bytes, layers, tags.

    ``config_member`` is ``None`` for a legacy image (its config is built, see the module
    docstring).  ``tags`` are the recorded names that parse; ``recorded`` all of them as text.
    """

    position: int
    config_raw: bytes
    config_member: str | None
    layers: tuple[ArchiveLayer, ...]
    tags: tuple[Reference, ...]
    recorded: tuple[str, ...]


def read_docker_archive(index: TarIndex) -> list[ArchivedImage]:
    """Every image the archive holds, in its own order; an archive that holds none (a
    ``manifest.json`` of ``[]``) is refused, so that ``load`` cannot succeed loading nothing."""
    if "manifest.json" in index:
        where, images = "manifest.json", _from_manifest(index)
    elif "repositories" in index or any(n.endswith("/json") for n in index.members):
        where, images = "repositories", _from_legacy(index)
    else:
        hint = " (it is an OCI layout: name it oci-archive:)" if "index.json" in index else ""
        raise ArchiveDamage(index.description, f"not a docker archive: no manifest.json{hint}")
    if not images:
        raise ArchiveDamage(index.description, f"{where}: no images in the archive", where)
    return images


def synthesize_manifest(config_raw: bytes, layers: list[Descriptor]) -> bytes:
    """The OCI manifest an archived image is described by (archives hold none of their own):
    the same bytes hatchway's ``docker`` format writes for the same image."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config_raw).hexdigest(),
            "size": len(config_raw),
        },
        "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers],
    }
    return compact_json(doc)


# -- manifest.json ---------------------------------------------------------------------------


def _from_manifest(index: TarIndex) -> list[ArchivedImage]:
    where = "manifest.json"
    try:
        doc = parse_json(index.read(where), where)  # never a RecursionError, however deep
    except MalformedContent as exc:
        raise ArchiveDamage(index.description, str(exc), where) from None
    if not isinstance(doc, list):
        raise ArchiveDamage(index.description, f"{where}: not a JSON array", where)
    images = []
    for position, entry in enumerate(doc):
        what = f"{where} entry {position}"
        if not isinstance(entry, dict):
            raise ArchiveDamage(index.description, f"{what}: not an object", where)
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        repo_tags = entry.get("RepoTags") or []
        if (
            not isinstance(config_name, str)
            or not isinstance(layer_names, list)
            or not all(isinstance(n, str) for n in layer_names)
            or not isinstance(repo_tags, list)
            or not all(isinstance(t, str) for t in repo_tags)
        ):
            raise ArchiveDamage(
                index.description, f"{what}: needs Config, Layers and RepoTags strings", where
            )
        config_raw = index.read(config_name)
        _check_named_digest(index, config_name, config_raw)
        layers = tuple(_layer(index, name) for name in layer_names)
        images.append(
            ArchivedImage(
                position,
                config_raw,
                config_name,
                layers,
                _tags(index, repo_tags, where),
                tuple(repo_tags),
            )
        )
    return images


def _check_named_digest(index: TarIndex, name: str, raw: bytes) -> None:
    """A member named after a sha256 (``<hex>.json``, ``blobs/sha256/<hex>``) must hash to it."""
    base = name.rsplit("/", 1)[-1].removesuffix(".json")
    if _HEX64.fullmatch(base):
        actual = hashlib.sha256(raw).hexdigest()
        if actual != base:
            raise ArchiveDamage(
                index.description,
                f"member {name}: digest mismatch: named sha256:{base}, holds sha256:{actual}",
                name,
            )


def _tags(index: TarIndex, recorded: list[str], where: str) -> tuple[Reference, ...]:
    tags: list[Reference] = []
    for text in recorded:
        try:
            ref = parse_reference(text)
        except InvalidReference as exc:
            raise ArchiveDamage(index.description, f"{where}: {exc}", where) from None
        if ref.digest is not None:
            continue
        tags.append(ref if ref.tag is not None else ref.with_tag(DEFAULT_TAG))
    return tuple(tags)


def _layer(index: TarIndex, name: str) -> ArchiveLayer:
    member = index.file(name)
    compression = sniff(index.head(member))
    if compression is Compression.NONE:
        # The blob is the diffID's content, verified when the layer moves.
        return ArchiveLayer(member, None, compression)
    named = _BLOB_NAME.fullmatch(name)
    if named is not None:
        # A blob named after its digest (the docker layout keeping the blobs as stored): the
        # name is the digest, the config the diffID, and the engine checks both as it moves.
        blob = Descriptor(_MEDIA[compression], "sha256:" + named.group(1), member.size)
        return ArchiveLayer(member, blob, compression)
    # Nothing names this compressed member's digest: it is whatever the member hashes to, so
    # moving the blob checks nothing.  Its content is checked here instead, decompressed
    # whole (the diffID, checked against the config by the source), or a load would store a
    # layer that every later save refuses.
    return _measured(index, member, name, compression)


def _measured(
    index: TarIndex, member: TarMember, name: str, compression: Compression
) -> ArchiveLayer:
    """A layer member hashed (and decompressed, if compressed): its blob and its diffID, the
    stream's end checked (truncation, trailing garbage) as when the layer is saved."""
    unknown = Descriptor(_MEDIA[compression], _UNKNOWN, member.size)  # measured, not checked
    decoder = LayerDecoder(Layer(unknown, _UNKNOWN, compression), None, store=index.description)
    decoder.what = f"member {name}"
    try:
        for chunk in index.chunks(member):
            decoder.feed(chunk)
        digest, diff_id = decoder.measured()
    except StoreError as exc:
        raise ArchiveDamage(index.description, exc.message, name) from None
    blob = Descriptor(_MEDIA[compression], digest, member.size)
    return ArchiveLayer(member, blob, compression, diff_id)


# -- legacy: repositories + v1 directories ----------------------------------------------------


def _from_legacy(index: TarIndex) -> list[ArchivedImage]:
    v1 = _v1_images(index)
    repos = _repositories(index, v1)
    parents = {p for doc in v1.values() if (p := doc.get("parent"))}
    named = [top for top, _ in repos]
    tops = list(dict.fromkeys(named + [i for i in v1 if i not in parents]))
    hashed: dict[str, ArchiveLayer] = {}
    images = []
    for position, top in enumerate(tops):
        chain = _chain(index, v1, top)
        layers = []
        for v1_id in chain:
            name = f"{v1_id}/layer.tar"
            if v1_id not in hashed:
                hashed[v1_id] = _legacy_layer(index, name)
            layers.append(hashed[v1_id])
        diff_ids = [layer.diff_id or "" for layer in layers]
        config = _legacy_config(v1, chain, diff_ids)
        tags = tuple(ref for t, ref in repos if t == top)
        images.append(
            ArchivedImage(
                position, config, None, tuple(layers), tags, tuple(r.recorded_tag() for r in tags)
            )
        )
    return images


def _v1_images(index: TarIndex) -> dict[str, dict[str, Any]]:
    v1: dict[str, dict[str, Any]] = {}
    for name in index.order:
        head, _, tail = name.partition("/")
        if tail != "json" or not _HEX64.fullmatch(head):
            continue
        try:
            doc = parse_json_object(index.read(name), name)
        except MalformedContent as exc:
            raise ArchiveDamage(index.description, str(exc), name) from None
        if doc.get("id", head) != head:
            raise ArchiveDamage(
                index.description, f"member {name}: id {doc.get('id')!r} is not {head}", name
            )
        parent = doc.get("parent")
        if parent is not None and (not isinstance(parent, str) or not _HEX64.fullmatch(parent)):
            raise ArchiveDamage(index.description, f"member {name}: invalid parent", name)
        for key in _V1_OBJECTS:
            # Docker decodes these into structs and refuses the image when one is not an object.
            if doc.get(key) is not None and not isinstance(doc[key], dict):
                raise ArchiveDamage(
                    index.description, f"member {name}: {key} is not an object", name
                )
        v1[head] = doc
    for v1_id, doc in v1.items():
        parent = doc.get("parent")
        if parent and parent not in v1:
            where = f"{v1_id}/json"
            raise ArchiveDamage(
                index.description, f"member {where}: parent {parent} is not in the archive", where
            )
    return v1


def _repositories(index: TarIndex, v1: dict[str, dict[str, Any]]) -> list[tuple[str, Reference]]:
    where = "repositories"
    named = []
    for name, top in raw_repositories(index):
        if top not in v1:
            raise ArchiveDamage(
                index.description,
                f"{where}: {name} names {top!r}, which is not in the archive",
                where,
            )
        try:
            ref = parse_reference(name)
        except InvalidReference as exc:
            raise ArchiveDamage(index.description, f"{where}: {exc}", where) from None
        named.append((top, ref))
    return named


def _chain(index: TarIndex, v1: dict[str, dict[str, Any]], top: str) -> list[str]:
    chain = [top]
    while parent := v1[chain[-1]].get("parent"):
        if parent in chain:
            where = f"{top}/json"
            raise ArchiveDamage(index.description, f"member {where}: parent chain loops", where)
        chain.append(parent)
    return chain[::-1]


def _legacy_layer(index: TarIndex, name: str) -> ArchiveLayer:
    """A legacy layer with its diffID: hashed (decompressed first, if it is compressed)."""
    member = index.file(name, origin=name)
    return _measured(index, member, name, sniff(index.head(member)))


def _legacy_config(v1: dict[str, dict[str, Any]], chain: list[str], diff_ids: list[str]) -> bytes:
    """The config Docker's legacy loader builds for the image whose top layer is
    ``chain[-1]`` (``MakeConfigFromV1Config``: keys sorted, compact)."""
    config = {k: v for k, v in v1[chain[-1]].items() if k not in _V1_FIELDS}
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    history = []
    for v1_id in chain:
        doc = v1[v1_id]
        entry: dict[str, Any] = {}
        if doc.get("created"):
            entry["created"] = doc["created"]
        if doc.get("author"):
            entry["author"] = doc["author"]
        cmd = (doc.get("container_config") or {}).get("Cmd")
        if isinstance(cmd, list) and cmd:
            entry["created_by"] = " ".join(str(c) for c in cmd)
        if doc.get("comment"):
            entry["comment"] = doc["comment"]
        history.append(entry)
    config["history"] = history
    return compact_json(config, sort_keys=True)


# -- for verify ---------------------------------------------------------------------------------


def check_v1_directories(index: TarIndex) -> int:
    """Check every ``<id>/json`` (its id, its parent present, no loop, a ``layer.tar``);
    return how many v1 directories there are."""
    v1 = _v1_images(index)
    for v1_id in v1:
        _chain(index, v1, v1_id)
        index.file(f"{v1_id}/layer.tar")
    return len(v1)


def raw_repositories(index: TarIndex) -> list[tuple[str, str]]:
    """``repositories`` as ``(repo:tag, value)`` pairs, as written (none without the file)."""
    where = "repositories"
    if where not in index:
        return []
    try:
        doc = parse_json_object(index.read(where), where)
    except MalformedContent as exc:
        raise ArchiveDamage(index.description, str(exc), where) from None
    pairs = []
    for repo, tags in doc.items():
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise ArchiveDamage(index.description, f"{where}: {repo} is not a tag map", where)
        pairs += [(f"{repo}:{tag}", top) for tag, top in tags.items()]
    return pairs
