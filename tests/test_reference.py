"""Reference parsing and normalisation (pure)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hatchway.errors import InvalidReference
from hatchway.reference import Reference, parse_query, parse_reference, parse_stored_name

HEX64 = "a" * 63 + "b"


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", None, None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", None, None),
        ("docker.io/library/busybox", "docker.io", "library/busybox", None, None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", None, None),
        ("user/app:v1", "docker.io", "user/app", "v1", None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
        ("127.0.0.1:5000/app:5000", "127.0.0.1:5000", "app", "5000", None),
        ("localhost/a/b", "localhost", "a/b", None, None),
        ("ghcr.io/o/r@sha256:" + HEX64, "ghcr.io", "o/r", None, "sha256:" + HEX64),
        ("r:t@sha256:" + HEX64, "docker.io", "library/r", "t", "sha256:" + HEX64),
        ("a__b/c-d.e", "docker.io", "a__b/c-d.e", None, None),
    ],
)
def test_parse_reference(
    text: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    assert parse_reference(text) == Reference(domain, path, tag, digest)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("bad!", "invalid path component"),
        ("a:b:c", "invalid"),
        ("app:" + "t" * 129, "invalid tag"),
        ("app:t\u00e0g", "invalid tag"),
        ("app@sha256:abc", "invalid digest"),
        ("app@md5:" + "a" * 32, "only sha256"),
        (HEX64, "64-character"),
        ("a//b", "empty path component"),
        ("-a", "invalid path component"),
        ("a b", "whitespace"),
        ("ftp://x/y", "unknown transport"),
        ("127.0.0.1:99999/x:1", "invalid registry host"),
        ("docker://registry.local:0/x", "invalid registry host"),
    ],
)
def test_invalid_references(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=reason):
        (parse_reference if text == HEX64 else parse_query)(text)


def test_familiar_and_qualified_forms() -> None:
    ref = parse_reference("busybox")
    assert ref.familiar_name == "busybox"
    assert ref.recorded_tag() == "busybox:latest"
    assert ref.qualified_tag() == "docker.io/library/busybox:latest"
    user = parse_reference("docker.io/user/app:1")
    assert (user.familiar_name, user.recorded_tag()) == ("user/app", "user/app:1")
    local = parse_reference("127.0.0.1:5000/app")
    assert local.recorded_tag() == "127.0.0.1:5000/app:latest"
    assert local.qualified_tag() == "127.0.0.1:5000/app:latest"


def test_queries_for_ids() -> None:
    assert parse_query("sha256:" + HEX64).id_prefix == HEX64
    assert parse_query("sha256:" + HEX64).reference is None
    assert parse_query(HEX64).reference is None
    both = parse_query("abc123")
    assert both.id_prefix == "abc123"
    assert both.reference == parse_reference("abc123")
    assert parse_query("app").id_prefix is None
    with pytest.raises(InvalidReference):
        parse_query("sha256:XYZ")


def test_registry_transport() -> None:
    q = parse_query("docker://127.0.0.1:5000/app:1")
    assert q.registry and q.id_prefix is None
    assert q.reference is not None
    assert q.reference.recorded_tag() == "127.0.0.1:5000/app:1"
    assert str(q.reference) == "docker://127.0.0.1:5000/app:1"
    hub = parse_query("docker://busybox")
    assert hub.reference is not None and hub.reference.recorded_tag() == "busybox:latest"


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1", "busybox:1"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("latest", None),
        ("v1.0", None),
        ("app@sha256:" + HEX64, None),
        ("Not A Name:x", None),
    ],
)
def test_stored_names(annotation: str, expected: str | None) -> None:
    ref = parse_stored_name(annotation)
    assert (ref.recorded_tag() if ref else None) == expected


component = st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,5}){0,2}", fullmatch=True)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
hosts = st.sampled_from(
    ["", "localhost/", "127.0.0.1:5000/", "registry.example.com/", "docker.io/"]
)


@given(hosts, st.lists(component, min_size=1, max_size=3), st.none() | tags)
def test_parse_roundtrips_through_recorded_tag(
    host: str, parts: list[str], tag: str | None
) -> None:
    """Whatever valid name goes in, its recorded tag parses back to the same repository."""
    # Without a host, a first component with a dot is read as a host (Docker's rule).
    assume(host or len(parts) == 1 or "." not in parts[0])
    text = host + "/".join(parts) + (f":{tag}" if tag else "")
    ref = parse_reference(text)
    again = parse_reference(ref.recorded_tag())
    assert again.repository() == ref.repository()
    assert again.tag == (tag or "latest")
    assert parse_reference(ref.qualified_tag()) == again


@given(st.text(max_size=40))
def test_parser_never_crashes(text: str) -> None:
    """Arbitrary text either parses or raises InvalidReference, nothing else."""
    try:
        q = parse_query(text)
    except InvalidReference:
        return
    assert q.reference is not None or q.id_prefix is not None


def test_hub_path_that_looks_like_a_host_keeps_docker_io() -> None:
    ref = parse_reference("docker.io/a.b/c")
    assert ref.recorded_tag() == "docker.io/a.b/c:latest"
    assert parse_reference(ref.recorded_tag()) == ref.with_tag("latest")
