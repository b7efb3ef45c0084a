"""The pure pieces of push: where each image goes (``--to``), deterministic compression, the
manifest rewrite, upload ranges and media types; and where credentials come from."""

from __future__ import annotations

import gzip
import io
import json
import random
import zlib
from pathlib import Path

import httpx
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.encode import (
    GZIP_HEADER,
    LayerEncoder,
    compressed_media_type,
    manifest_allows,
)
from hatchway.errors import HatchwayError, InvalidReference
from hatchway.model import (
    DOCKER_MANIFEST,
    OCI_LAYER,
    OCI_MANIFEST,
    Compression,
    Descriptor,
    replace_layers,
    sha256_digest,
)
from hatchway.reference import parse_reference
from hatchway.transports.registry.credentials import (
    DOCKER_HUB_SERVER,
    CredentialLookup,
    Credentials,
    HelperError,
)
from hatchway.transports.registry.protocol import parse_upload_range
from hatchway.transports.registry.targets import (
    PushName,
    PushTarget,
    check_single,
    check_unique_tags,
    parse_push_target,
    push_name,
)

ID = "sha256:" + "ab" * 32


# -- --to ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("reg.example:5000", PushTarget("reg.example:5000")),
        ("docker://reg.example:5000/", PushTarget("reg.example:5000")),
        ("127.0.0.1:5000/mirror", PushTarget("127.0.0.1:5000", "mirror")),
        ("localhost/a/b", PushTarget("localhost", "a/b")),
        ("docker://reg/team/app:1.0", PushTarget("reg", "team/app", "1.0")),
        ("reg:5000/app:v2", PushTarget("reg:5000", "app", "v2")),
    ],
)
def test_push_targets_parse(text: str, target: PushTarget) -> None:
    assert parse_push_target(text) == target


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "HOST"),
        ("docker://", "HOST"),
        ("reg/app@sha256:" + "0" * 64, "not a digest"),
        ("reg/App", "invalid repository path"),
        ("reg/a//b", "empty path component"),
        ("bad host/x", "invalid registry host"),
        ("reg/app:bad tag!", "invalid tag"),
    ],
)
def test_bad_push_targets_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=reason):
        parse_push_target(text)


def test_each_image_goes_to_its_repository_path_under_the_prefix() -> None:
    mirror = PushTarget("reg:5000", "mirror")
    bare = PushTarget("reg:5000")
    nginx = parse_reference("nginx:1.25")  # docker.io/library/nginx:1.25
    local = parse_reference("127.0.0.1:5000/team/app:2")
    assert push_name(mirror, nginx, ID) == PushName("mirror/library/nginx", "1.25")
    assert push_name(bare, nginx, ID) == PushName("library/nginx", "1.25")
    assert push_name(mirror, local, ID) == PushName("mirror/team/app", "2")
    untagged = parse_reference("127.0.0.1:5000/team/app")
    assert push_name(mirror, untagged, ID) == PushName("mirror/team/app", "latest")
    by_digest = parse_reference("team/app@sha256:" + "1" * 64)
    assert push_name(mirror, by_digest, ID) == PushName("mirror/team/app", None)
    assert push_name(mirror, None, ID) == PushName("mirror", None)
    with pytest.raises(HatchwayError, match=r"named only by its ID.*--to reg:5000/REPO"):
        push_name(bare, None, ID)


def test_the_one_image_form_names_every_name_of_its_image() -> None:
    exact = PushTarget("reg", "copy/app", "7")
    for ref in (parse_reference("nginx:1.25"), parse_reference("a/b@sha256:" + "2" * 64), None):
        assert push_name(exact, ref, ID) == PushName("copy/app", "7")
    check_single(exact, 1)
    with pytest.raises(HatchwayError, match="names one image, but the names given are 2"):
        check_single(exact, 2)
    check_single(PushTarget("reg"), 5)


def test_one_tag_for_two_images_is_refused() -> None:
    other = "sha256:" + "cd" * 32
    check_unique_tags([(PushName("a", "1"), ID), (PushName("a", "1"), ID)])
    check_unique_tags([(PushName("a", None), ID), (PushName("a", None), other)])
    with pytest.raises(HatchwayError, match="two images would be pushed to a:1"):
        check_unique_tags([(PushName("a", "1"), ID), (PushName("a", "1"), other)])


# -- deterministic compression -----------------------------------------------------------


def _layer_bytes() -> bytes:
    rng = random.Random(7)
    text = b"".join(rng.choice([b"usr/lib/x ", b"hello ", b"\0" * 512]) for _ in range(20000))
    return text + rng.randbytes(300_000)


def _encode(compression: Compression, data: bytes, step: int) -> tuple[bytes, str, int]:
    out = io.BytesIO()
    encoder = LayerEncoder(compression, out)
    for i in range(0, len(data), step):
        encoder.write(data[i : i + step])
    digest, size = encoder.finish()
    return out.getvalue(), digest, size


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_compression_is_the_same_however_the_bytes_arrive(compression: Compression) -> None:
    data = _layer_bytes()
    results = {_encode(compression, data, step) for step in (997, 65536, 1 << 20, len(data))}
    assert len(results) == 1
    raw, digest, size = results.pop()
    assert digest == sha256_digest(raw) and size == len(raw)
    if compression is Compression.GZIP:
        assert raw.startswith(GZIP_HEADER) and gzip.decompress(raw) == data
    elif compression is Compression.ZSTD:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == data
    else:
        assert raw == data


def test_gzip_output_is_pinned() -> None:
    """The digest of a compressed layer is part of every manifest pushed: it must not change
    between runs, machines or releases without anyone noticing."""
    assert "ng" not in zlib.ZLIB_RUNTIME_VERSION, "zlib-ng compresses to other bytes"
    raw, digest, _ = _encode(Compression.GZIP, b"hatchway\n" * 1000, 4096)
    assert raw[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS 255
    assert digest == "sha256:53116654536b95dade4538f1550b9039cf8b99b53dd31f099fecdce662036a5b"


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_gzip_round_trips_anything(data: bytes, step: int) -> None:
    raw, _, _ = _encode(Compression.GZIP, data, step)
    assert gzip.decompress(raw) == data


def test_compressed_media_types() -> None:
    assert compressed_media_type(OCI_LAYER, Compression.GZIP) == OCI_LAYER + "+gzip"
    assert compressed_media_type(OCI_LAYER, Compression.ZSTD) == OCI_LAYER + "+zstd"
    docker = "application/vnd.docker.image.rootfs.diff.tar"
    assert compressed_media_type(docker, Compression.GZIP) == docker + ".gzip"
    assert compressed_media_type(docker, Compression.ZSTD) is None
    assert compressed_media_type(docker, Compression.NONE) == docker
    assert not manifest_allows(DOCKER_MANIFEST, Compression.ZSTD)
    assert manifest_allows(OCI_MANIFEST, Compression.ZSTD)


# -- the manifest rewrite -----------------------------------------------------------------


def test_replace_layers_changes_only_the_replaced_descriptors() -> None:
    old = "sha256:" + "1" * 64
    keep = "sha256:" + "2" * 64
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": keep,
            "size": 3,
        },
        "layers": [
            {"mediaType": OCI_LAYER, "digest": old, "size": 10, "annotations": {"a": "b"}},
            {"mediaType": OCI_LAYER + "+gzip", "digest": keep, "size": 5},
        ],
        "annotations": {"org.example": "é"},
    }
    raw = json.dumps(doc, indent=3).encode()
    assert replace_layers(raw, {}) is raw
    new = Descriptor(OCI_LAYER + "+gzip", "sha256:" + "3" * 64, 7)
    out = replace_layers(raw, {old: new})
    assert out == replace_layers(raw, {old: new})  # deterministic
    parsed = json.loads(out)
    assert parsed["layers"][0] == {
        "mediaType": new.media_type,
        "digest": new.digest,
        "size": 7,
        "annotations": {"a": "b"},
    }
    assert parsed["layers"][1] == doc["layers"][1]  # type: ignore[index]
    assert parsed["config"] == doc["config"] and parsed["annotations"] == doc["annotations"]
    assert list(parsed) == list(doc)


def test_upload_ranges() -> None:
    assert parse_upload_range("0-49") == 50
    assert parse_upload_range("bytes=0-99") == 100
    assert parse_upload_range("0-0") == 0
    assert parse_upload_range(None) is None
    assert parse_upload_range("5-9") is None


# -- credentials: files and helpers --------------------------------------------------------


def _config(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_registry_helper_wins_over_the_default_helper_and_auths(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    def runner(name: str, server: str) -> Credentials | None:
        asked.append((name, server))
        return {"per-host": Credentials("h", "s1"), "store": Credentials("d", "s2")}.get(name)

    config = _config(
        tmp_path,
        {
            "credHelpers": {"reg.example:5000": "per-host", "https://other.example": "none"},
            "credsStore": "store",
            "auths": {"reg.example:5000": {"username": "file", "password": "f"}},
        },
    )
    lookup = CredentialLookup([config], runner)
    assert lookup.find("reg.example:5000", "app") == Credentials("h", "s1")
    assert lookup.find("reg.example:5000", "other") == Credentials("h", "s1")
    assert lookup.find("docker.io", "library/busybox") == Credentials("d", "s2")
    # "none" has nothing for other.example: the auths (none here) are next.
    assert lookup.find("other.example", "x") is None
    # Each helper ran once per server, however many repositories asked.
    assert asked == [
        ("per-host", "reg.example:5000"),
        ("store", DOCKER_HUB_SERVER),
        ("none", "other.example"),
    ]


def test_a_failing_helper_falls_back_to_auths_and_is_remembered(tmp_path: Path) -> None:
    def runner(name: str, server: str) -> Credentials | None:
        raise HelperError("credential helper docker-credential-gone is not on PATH")

    config = _config(
        tmp_path,
        {"credsStore": "gone", "auths": {"a.example": {"username": "u", "password": "p"}}},
    )
    lookup = CredentialLookup([config], runner)
    assert lookup.find("a.example", "x") == Credentials("u", "p")
    assert lookup.find("b.example", "x") is None
    assert lookup.problem("b.example") == "credential helper docker-credential-gone is not on PATH"


def test_identity_tokens_in_files(tmp_path: Path) -> None:
    config = _config(tmp_path, {"auths": {"reg.example": {"auth": "", "identitytoken": "rt-1"}}})
    found = CredentialLookup([config]).find("reg.example", "x")
    assert found is not None and found.identity_token and found.password == "rt-1"
    assert "rt-1" not in repr(found) and "rt-1" not in str(found)


def test_an_upload_location_is_resolved_against_the_request_and_checked() -> None:
    """A relative ``Location`` is relative to the request's path (RFC 9110), not to the host's
    root; one that is no URL is a registry error, not httpx's exception."""
    from hatchway.errors import RegistryError
    from hatchway.transports.registry.upload import _location

    request = httpx.Request("POST", "http://127.0.0.1:5000/v2/app/blobs/uploads/")

    def answer(location: str | None) -> httpx.Response:
        headers = {"location": location} if location is not None else {}
        return httpx.Response(202, headers=headers, request=request)

    assert _location(answer("uploads/1"), "app", "upload") == (
        "http://127.0.0.1:5000/v2/app/blobs/uploads/uploads/1"
    )
    assert _location(answer("/v2/app/blobs/uploads/2?state=x"), "app", "upload") == (
        "http://127.0.0.1:5000/v2/app/blobs/uploads/2?state=x"
    )
    assert _location(answer("http://other:1/up/3"), "app", "upload") == "http://other:1/up/3"
    assert _location(answer(None), "app", "upload") is None
    with pytest.raises(RegistryError, match="invalid Location 'http://\\[::1/upload'"):
        _location(answer("http://[::1/upload"), "app", "upload")
