"""The pure model: what a manifest-or-index document is, and JSON that tries to crash us."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hatchway.errors import MalformedContent, UnsupportedMediaType
from hatchway.limits import MAX_JSON_DEPTH
from hatchway.model import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    document_kind,
    json_depth,
    parse_json,
)

MANIFEST_BODY: dict[str, Any] = {"schemaVersion": 2, "config": {}, "layers": []}
INDEX_BODY: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
UNKNOWN = "application/vnd.example.thing.v1+json"


def kind(body: dict[str, Any], descriptor_type: str) -> str:
    return document_kind(json.dumps(body).encode(), descriptor_type, "doc")[0]


@pytest.mark.parametrize(
    ("body", "descriptor_type", "expected"),
    [
        # the document's own type, when present, is the answer
        ({**MANIFEST_BODY, "mediaType": OCI_MANIFEST}, OCI_MANIFEST, OCI_MANIFEST),
        ({**MANIFEST_BODY, "mediaType": DOCKER_MANIFEST}, OCI_MANIFEST, DOCKER_MANIFEST),
        ({**INDEX_BODY, "mediaType": DOCKER_LIST}, OCI_INDEX, DOCKER_LIST),
        # a sloppy descriptor (a registry's generic Content-Type) does not matter then
        ({**MANIFEST_BODY, "mediaType": OCI_MANIFEST}, "application/json", OCI_MANIFEST),
        # OCI allows the body to leave it out: the descriptor's type decides
        (MANIFEST_BODY, OCI_MANIFEST, OCI_MANIFEST),
        (INDEX_BODY, OCI_INDEX, OCI_INDEX),
        (MANIFEST_BODY, DOCKER_MANIFEST + "; charset=utf-8", DOCKER_MANIFEST),
    ],
)
def test_document_kind_follows_media_types(
    body: dict[str, Any], descriptor_type: str, expected: str
) -> None:
    assert kind(body, descriptor_type) == expected


@pytest.mark.parametrize(
    ("body", "descriptor_type"),
    [
        ({**MANIFEST_BODY, "mediaType": UNKNOWN}, UNKNOWN),  # item 6, as reported
        ({**MANIFEST_BODY, "mediaType": UNKNOWN}, OCI_MANIFEST),  # the body says otherwise
        (MANIFEST_BODY, UNKNOWN),  # shaped like a manifest, typed as something else
        (MANIFEST_BODY, ""),  # no type anywhere: never guessed from the shape
        (INDEX_BODY, ""),
    ],
)
def test_unknown_media_types_are_refused(body: dict[str, Any], descriptor_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="unsupported media type"):
        kind(body, descriptor_type)


@pytest.mark.parametrize(
    ("body", "descriptor_type", "match"),
    [
        ({**INDEX_BODY, "mediaType": OCI_INDEX}, OCI_MANIFEST, "descriptor says"),
        (INDEX_BODY, OCI_MANIFEST, "holds an index's manifests"),
        (MANIFEST_BODY, OCI_INDEX, "holds a manifest's config and layers"),
        ({**MANIFEST_BODY, "mediaType": 7}, OCI_MANIFEST, "mediaType is not a string"),
    ],
)
def test_a_document_of_the_other_kind_is_malformed(
    body: dict[str, Any], descriptor_type: str, match: str
) -> None:
    """As containerd's validateMediaType: a manifest must not carry an index's fields, nor
    the other way round."""
    with pytest.raises(MalformedContent, match=match):
        kind(body, descriptor_type)


def test_schema1_is_refused_by_either_type() -> None:
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        kind({"schemaVersion": 1, "fsLayers": []}, OCI_MANIFEST)
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        kind({}, "application/vnd.docker.distribution.manifest.v1+prettyjws")


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_json_nested_past_the_parser_is_malformed_not_a_crash(opener: bytes) -> None:
    with pytest.raises(MalformedContent, match="nested too deeply"):
        parse_json(opener * 100_000, "doc")


def test_json_deeper_than_the_limit_is_refused() -> None:
    """Deep enough to parse, too deep to be re-encoded safely later (a v1 layer json)."""
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_depth(parse_json(at_limit, "doc")) == MAX_JSON_DEPTH
    deeper = b"[" + at_limit + b"]"
    with pytest.raises(MalformedContent, match=f"deeper than {MAX_JSON_DEPTH} levels"):
        parse_json(deeper, "doc")


def test_json_depth() -> None:
    assert json_depth(1) == 0
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth([[], [[]]]) == 3
