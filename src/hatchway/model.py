"""The image model: descriptors, manifests, indexes, configs and the ids derived from them.

Pure: parses and validates bytes that a store hands over, computes chain ids, and knows the
media types of the OCI image spec and Docker's schema 2.  Nothing here performs I/O.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any

from hatchway.errors import MalformedContent, UnsupportedMediaType
from hatchway.limits import MAX_JSON_DEPTH

# Media types (OCI image spec v1.1, Docker image manifest v2 schema 2).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_DOCUMENT_TYPES = INDEX_TYPES | MANIFEST_TYPES


class Compression(Enum):
    """How a layer blob is stored; the archive always holds it uncompressed."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


_LAYER_TYPES: dict[str, Compression] = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER + "+gzip": Compression.GZIP,
    OCI_LAYER + "+zstd": Compression.ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": Compression.NONE,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": Compression.GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": Compression.GZIP,
}

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise MalformedContent(f"{what}: invalid digest {value!r} (only sha256 is supported)")
    return value


def hex_of(digest: str) -> str:
    """``sha256:abc...`` → ``abc...``."""
    return digest.partition(":")[2]


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """``os/architecture[/variant]``, as in an image index or ``--platform``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant] (e.g. linux/amd64)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        """The platform images run on here (Linux images, this machine's architecture)."""
        machine = _platform.machine().lower()
        arch, variant = _MACHINE_ARCH.get(machine, (machine, None))
        return cls("linux", arch, variant)

    def matches(self, other: Platform) -> bool:
        """Whether an image built for ``other`` satisfies a request for ``self``.

        A request without a variant accepts any variant; arm64's variant ``v8`` is its default.
        """
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        return _norm_variant(self) == _norm_variant(other)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


_MACHINE_ARCH: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", None),
    "i386": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


def _norm_variant(p: Platform) -> str | None:
    if p.architecture == "arm64" and p.variant in (None, "v8"):
        return "v8"
    return p.variant


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and its exact size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    def __post_init__(self) -> None:
        check_digest(self.digest, "descriptor")
        if self.size < 0:
            raise MalformedContent(f"descriptor {self.digest}: negative size")

    @classmethod
    def from_json(cls, obj: object, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise MalformedContent(f"{what}: descriptor is not an object")
        media_type = obj.get("mediaType", "")
        size = obj.get("size")
        if not isinstance(media_type, str) or not isinstance(size, int) or isinstance(size, bool):
            raise MalformedContent(f"{what}: descriptor lacks a mediaType or an integer size")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise MalformedContent(f"{what}: annotations are not a string map")
        plat = obj.get("platform")
        platform = None
        if isinstance(plat, dict) and isinstance(plat.get("os"), str):
            platform = Platform(
                plat["os"], str(plat.get("architecture", "")), plat.get("variant") or None
            )
        # Interned: a thousand images repeat a handful of media types ten thousand times.
        media_type = sys.intern(media_type)
        return cls(media_type, check_digest(obj.get("digest"), what), size, annotations, platform)


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of an image: the stored blob and the uncompressed content's diffID.

    An ``opaque`` layer is a blob of an artifact (a signature's payload, an SBOM, an artifact's
    config): kept exactly as it is — never decompressed, compressed or read as a tar — and
    checked by its digest and size alone (its "diffID" is its own digest).
    """

    blob: Descriptor
    diff_id: str
    compression: Compression
    opaque: bool = False

    @classmethod
    def of_blob(cls, blob: Descriptor) -> Layer:
        """An artifact's blob, moved and verified like a layer but kept as it is."""
        return cls(blob, blob.digest, Compression.NONE, opaque=True)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image config: its original bytes (exported verbatim) and the fields we use.

    The parsed document is not kept (:attr:`data` parses ``raw`` again): a save of a thousand
    images would otherwise hold a hundred thousand small objects for a field one archive
    format reads once per image.
    """

    raw: bytes
    digest: str
    diff_ids: tuple[str, ...]
    created: int
    os: str
    architecture: str
    variant: str | None

    @property
    def data(self) -> dict[str, Any]:
        """The whole config document, parsed afresh (``raw`` was checked when parsed)."""
        return parse_json_object(self.raw, f"config {self.digest}")

    @property
    def id(self) -> str:
        """The image ID, which is the config digest."""
        return self.digest

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def parse_json(raw: bytes | str, what: str) -> Any:
    """Parse untrusted JSON: any failure, including nesting so deep that the parser would
    overflow the stack or that re-encoding the document later would (deeper than
    ``MAX_JSON_DEPTH``), raises :class:`MalformedContent` — never ``RecursionError``."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise MalformedContent(f"{what}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedContent(f"{what}: not valid JSON ({exc})") from None
    # Depth cannot exceed the number of brackets: a C-speed count spares most documents the walk.
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    brackets = text.count(b"[") + text.count(b"{")
    if brackets > MAX_JSON_DEPTH and json_depth(obj) > MAX_JSON_DEPTH:
        raise MalformedContent(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


def json_depth(obj: Any) -> int:
    """How deeply arrays and objects nest in ``obj`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    obj = parse_json(raw, what)
    if not isinstance(obj, dict):
        raise MalformedContent(f"{what}: not a JSON object")
    return obj


def parse_config(raw: bytes, digest: str) -> ImageConfig:
    """Parse an image config; ``digest`` must already have been verified against ``raw``."""
    obj = parse_json_object(raw, f"config {digest}")
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise MalformedContent(f"config {digest}: no rootfs.diff_ids")
    diff_ids = tuple(check_digest(d, f"config {digest} diff_id") for d in rootfs["diff_ids"])
    created = parse_created(obj.get("created"))
    return ImageConfig(
        raw=raw,
        digest=digest,
        diff_ids=diff_ids,
        created=created,
        os=str(obj.get("os", "")),
        architecture=str(obj.get("architecture", "")),
        variant=obj.get("variant") or None,
    )


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def document_kind(raw: bytes, descriptor_type: str, what: str) -> tuple[str, dict[str, Any]]:
    """Parse a manifest-or-index document and say which it is (its media type).

    As containerd decides (``images.Manifest`` and ``validateMediaType``): the document is
    what its media type says, never what its shape suggests.  The document's own
    ``mediaType`` is used when present (it must then be a known manifest or index type, of
    the same kind as a known descriptor type); OCI allows it to be absent, and then the
    descriptor's type decides.  Anything else — an unknown type, or no type at all — raises
    :class:`UnsupportedMediaType`; so does Docker schema 1.  A document whose fields belong to
    the other kind (a "manifest" with ``manifests``, an "index" with ``layers``) is malformed.
    """
    obj = parse_json_object(raw, what)
    body_type = obj.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise MalformedContent(f"{what}: mediaType is not a string")
    declared = descriptor_type.split(";")[0].strip()  # a Content-Type may carry parameters
    if body_type in DOCKER_SCHEMA1 or declared in DOCKER_SCHEMA1 or obj.get("schemaVersion") == 1:
        shown = body_type or declared or "schemaVersion 1"
        raise UnsupportedMediaType(what, shown, "a Docker schema 1 manifest (unsupported)")
    if body_type:
        if body_type not in _DOCUMENT_TYPES:
            raise UnsupportedMediaType(what, body_type, "an image manifest or index")
        if declared in _DOCUMENT_TYPES and (declared in INDEX_TYPES) != (body_type in INDEX_TYPES):
            raise MalformedContent(
                f"{what}: the descriptor says {declared} but the document says {body_type}"
            )
        media_type = body_type
    elif declared in _DOCUMENT_TYPES:
        media_type = declared
    else:
        raise UnsupportedMediaType(what, declared, "an image manifest or index")
    if media_type in MANIFEST_TYPES and "manifests" in obj:
        raise MalformedContent(f"{what}: {media_type} holds an index's manifests")
    if media_type in INDEX_TYPES and ("layers" in obj or "config" in obj):
        raise MalformedContent(f"{what}: {media_type} holds a manifest's config and layers")
    return media_type, obj


def parse_manifest(obj: dict[str, Any], media_type: str, what: str) -> Manifest:
    config = Descriptor.from_json(obj.get("config"), f"{what} config")
    layers_json = obj.get("layers")
    if not isinstance(layers_json, list):
        raise MalformedContent(f"{what}: layers is not a list")
    layers = tuple(Descriptor.from_json(d, f"{what} layer") for d in layers_json)
    if config.media_type not in CONFIG_TYPES:
        raise UnsupportedMediaType(what, config.media_type, "an image config")
    return Manifest(media_type, config, layers)


def parse_index(obj: dict[str, Any], what: str) -> tuple[Descriptor, ...]:
    manifests = obj.get("manifests")
    if not isinstance(manifests, list):
        raise MalformedContent(f"{what}: manifests is not a list")
    return tuple(Descriptor.from_json(d, f"{what} entry") for d in manifests)


def replace_layers(raw: bytes, replaced: Mapping[str, Descriptor]) -> bytes:
    """A manifest's bytes with the layers whose digest ``replaced`` maps given the new media
    type, digest and size (other fields of those layers, and everything else, kept).

    Without a replacement the bytes are returned unchanged, so the manifest keeps its digest;
    with one they are serialised compactly, keys in their original order, so the same input
    always gives the same bytes (and digest).
    """
    return _replace_descriptors(raw, "manifest", "layers", replaced, media_type=True)


def replace_children(raw: bytes, replaced: Mapping[str, Descriptor]) -> bytes:
    """An index's bytes with the children whose digest ``replaced`` maps given the new digest
    and size (everything else kept); unchanged bytes when no child is replaced, so the index
    keeps its digest.  As :func:`replace_layers`, a changed index is serialised compactly."""
    return _replace_descriptors(raw, "index", "manifests", replaced, media_type=False)


def _replace_descriptors(
    raw: bytes, what: str, key: str, replaced: Mapping[str, Descriptor], *, media_type: bool
) -> bytes:
    doc = parse_json_object(raw, what)
    listed = doc.get(key)
    if not isinstance(listed, list):
        raise MalformedContent(f"{what}: {key} is not a list")
    changed = False
    for entry in listed:
        new = replaced.get(str(entry.get("digest"))) if isinstance(entry, dict) else None
        if new is not None:
            entry.update(digest=new.digest, size=new.size)
            if media_type:
                entry.update(mediaType=new.media_type)
            changed = True
    if not changed:
        return raw
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def trim_index(raw: bytes, keep: Collection[str]) -> bytes:
    """An index's bytes listing only the children whose digest is in ``keep`` (the platforms
    a partial copy carries), compactly serialised: a new index, with a new digest."""
    doc = parse_json_object(raw, "index")
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise MalformedContent("index: manifests is not a list")
    doc["manifests"] = [c for c in manifests if isinstance(c, dict) and c.get("digest") in keep]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def layer_compression(descriptor: Descriptor, what: str) -> Compression:
    try:
        return _LAYER_TYPES[descriptor.media_type]
    except KeyError:
        raise UnsupportedMediaType(what, descriptor.media_type, "a layer") from None


def image_layers(manifest: Manifest, config: ImageConfig, what: str) -> tuple[Layer, ...]:
    """Pair each manifest layer with its diffID; the counts must agree."""
    if len(manifest.layers) != len(config.diff_ids):
        raise MalformedContent(
            f"{what}: manifest has {len(manifest.layers)} layers "
            f"but config has {len(config.diff_ids)} diff_ids"
        )
    return tuple(
        Layer(blob, diff_id, layer_compression(blob, what))
        for blob, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
    )


#: BuildKit's annotation on an attestation manifest in an index: the manifest it is about.
DOCKER_REFERENCE_DIGEST = "vnd.docker.reference.digest"


def is_image_manifest(doc: Mapping[str, Any]) -> bool:
    """Whether a parsed manifest is an image to run: an image config and layers of known
    types (an artifact — a signature, an SBOM, BuildKit's in-toto attestations — is not)."""
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, dict) or config.get("mediaType") not in CONFIG_TYPES:
        return False
    if doc.get("artifactType") is not None:
        return False
    if layers is None:  # Go's nil slice: an image of no layers
        return True
    return isinstance(layers, list) and all(
        isinstance(la, dict) and la.get("mediaType") in _LAYER_TYPES for la in layers
    )


def artifact_type_of(doc: Mapping[str, Any]) -> str | None:
    """An artifact manifest's type: its ``artifactType``, else its config's media type (the
    OCI image spec's rule) — unless that is an image config, as cosign's signatures and
    attestations carry: then their first layer's (``...cosign.simplesigning.v1+json``,
    ``application/vnd.dsse.envelope.v1+json``), which says what they are."""
    declared = doc.get("artifactType")
    if isinstance(declared, str) and declared:
        return declared
    config = doc.get("config")
    media_type = config.get("mediaType") if isinstance(config, dict) else None
    layers = doc.get("layers")
    if media_type in CONFIG_TYPES and isinstance(layers, list) and layers:
        first = layers[0].get("mediaType") if isinstance(layers[0], dict) else None
        if isinstance(first, str):
            return first
    return media_type if isinstance(media_type, str) else None


def refers_to(descriptor: Descriptor) -> str | None:
    """The digest an index entry says it is about (BuildKit's attestation manifests)."""
    return descriptor.annotations.get(DOCKER_REFERENCE_DIGEST)


def select_platform(entries: Sequence[Descriptor], wanted: Platform) -> Descriptor | None:
    """The first manifest of an index built for ``wanted`` (attestations are skipped)."""
    for entry in entries:
        if entry.media_type not in MANIFEST_TYPES or entry.platform is None:
            continue
        if wanted.matches(entry.platform):
            return entry
    return None


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Layer chain ids: ``C0 = D0``, ``Ci = sha256("C(i-1) Di")`` (image-spec config.md)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append(sha256_digest(f"{chain[-1]} {diff_id}".encode()))
    return chain


_CREATED = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|z|[+-]\d{2}:\d{2})?"
)


def parse_created(value: object) -> int:
    """An RFC 3339 ``created`` as whole seconds since the epoch; 0 when absent or unparsable.

    Go writes nanoseconds, which :func:`datetime.fromisoformat` rejects on 3.11, so this
    parses the fields itself.  Times before the epoch clamp to 0 (tar mtimes are unsigned).
    """
    if not isinstance(value, str):
        return 0
    m = _CREATED.fullmatch(value.strip())
    if not m:
        return 0
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    zone = m.group(7)
    tz = UTC
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        return 0
    return max(0, int(when.timestamp()))
