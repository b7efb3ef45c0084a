"""The registry client and its pure protocol pieces, with httpx.MockTransport as the registry:
headers, errors, retries, Retry-After, resume, schema 1, digest checks, credentials."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from hatchway import RegistryOptions, RetryPolicy, Selection
from hatchway.errors import DigestMismatch, RegistryError, StoreError, UnsupportedMediaType
from hatchway.limits import STREAM_CHUNK
from hatchway.model import DOCKER_SCHEMA1, OCI_MANIFEST, Descriptor
from hatchway.reference import parse_query
from hatchway.transports.registry.credentials import Credentials, lookup
from hatchway.transports.registry.options import Security, api_host, is_loopback
from hatchway.transports.registry.protocol import (
    MANIFEST_ACCEPT,
    parse_challenges,
    parse_content_range,
    parse_error_body,
    parse_retry_after,
)
from hatchway.transports.registry.source import RegistryStore
from tests.registry_support import Sleeps

HOST = "127.0.0.1:5999"
Handler = Callable[[httpx.Request], httpx.Response]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _store(handler: Handler, sleeps: Sleeps | None = None, **kw: object) -> RegistryStore:
    """A store whose registry API speaks only TLS (``HOST`` is loopback: the client also
    tries the API over plain HTTP until it hears TLS, and those attempts find nothing)."""

    def tls_only(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http" and request.url.path.startswith("/v2/"):
            raise httpx.ConnectError("connection refused")
        return handler(request)

    retry = RetryPolicy(retries=3, sleep=sleeps or Sleeps())
    opts = RegistryOptions(
        use_credential_files=False,
        retry=retry,
        transport=httpx.MockTransport(tls_only),
        **kw,  # type: ignore[arg-type]
    )
    return RegistryStore(opts)


def _error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return httpx.Response(status, content=body, headers=headers)


CONFIG = json.dumps(
    {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
).encode()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [],
    }
).encode()


def _registry(
    manifest: bytes = MANIFEST, config: bytes = CONFIG, headers: dict[str, str] | None = None
) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            assert request.headers["accept"] == MANIFEST_ACCEPT
            return httpx.Response(200, content=manifest, headers=headers)
        return httpx.Response(200, content=config)

    return handler


# -- pure pieces --------------------------------------------------------------------------


def test_challenges_parse_quoted_params_and_several_schemes() -> None:
    [basic, bearer] = parse_challenges(
        'Basic realm="r, with comma", Bearer realm="https://auth.example/token",'
        'service="registry.example",scope="repository:a/b:pull,push"'
    )
    assert basic.scheme == "basic" and basic.realm == "r, with comma"
    assert bearer.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }


def test_error_bodies_retry_after_and_content_range() -> None:
    body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}'
    assert parse_error_body(body).code == "NAME_UNKNOWN"
    assert parse_error_body(b"<html>").code is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_content_range("bytes 100-199/200") == (100, 199, 200)
    assert parse_content_range("bytes 5-9/*") == (5, 9, None)


def test_every_host_gets_https_first_and_only_loopback_and_insecure_hosts_may_fall_back() -> None:
    opts = RegistryOptions(insecure_registries=frozenset({"reg.lan:5000", "127.0.0.2"}))
    assert [is_loopback(h) for h in ("localhost:5000", "127.8.9.1", "[::1]:5000")] == [True] * 3
    assert not is_loopback("example.com:5000")
    assert opts.security("127.0.0.1:5000") is Security.HTTPS_OR_HTTP
    assert opts.security("localhost") is Security.HTTPS_OR_HTTP
    assert opts.security("reg.lan:5000") is Security.INSECURE
    assert opts.security("127.0.0.2") is Security.INSECURE  # named: no verification either
    assert opts.security("reg.lan:5001") is Security.HTTPS
    assert opts.security("ghcr.io") is Security.HTTPS
    assert [s.verify for s in Security] == [True, True, False]
    assert [s.may_fall_back for s in Security] == [False, True, True]
    assert api_host("docker.io") == "registry-1.docker.io" and api_host("ghcr.io") == "ghcr.io"
    assert opts.with_insecure("ghcr.io").security("ghcr.io") is Security.INSECURE
    assert opts.with_insecure("reg.lan:5000") is opts


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.5, max_retry_after=30)
    for attempt, full in enumerate([1.0, 2.0, 4.0, 8.0, 8.0]):
        assert full * 0.5 <= policy.delay(attempt) <= full
    assert policy.delay(0, retry_after=12) == 12
    assert policy.delay(0, retry_after=600) == 30


def test_credentials_never_print_their_password(tmp_path: Path) -> None:
    creds = Credentials.parse("user:pa:ss")
    assert creds.password == "pa:ss"
    assert "pa:ss" not in repr(creds) and "pa:ss" not in str(creds)
    assert "pa:ss" not in repr(RegistryOptions(creds="user:pa:ss"))


def test_credential_files_match_hosts_urls_and_the_most_specific_path(tmp_path: Path) -> None:
    def auth(u: str, p: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}

    docker = tmp_path / "config.json"
    docker.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": auth("hub", "h"),
                    "reg.example:5000": auth("host", "x"),
                    "reg.example:5000/team": {"username": "team", "password": "t"},
                    "broken.example": {"auth": "%%%"},
                }
            }
        )
    )
    assert lookup("docker.io", "library/busybox", [docker]) == Credentials("hub", "h")
    assert lookup("reg.example:5000", "app", [docker]) == Credentials("host", "x")
    assert lookup("reg.example:5000", "team/app", [docker]) == Credentials("team", "t")
    assert lookup("reg.example:5000", "teamwork/app", [docker]) == Credentials("host", "x")
    assert lookup("broken.example", "x", [docker]) is None
    assert lookup("other.example", "x", [docker, tmp_path / "missing.json"]) is None


# -- the client over a mock transport -----------------------------------------------------


@pytest.mark.anyio
async def test_schema1_manifests_are_refused_as_unsupported() -> None:
    schema1 = json.dumps({"schemaVersion": 1, "name": "app", "fsLayers": []}).encode()
    store = _store(_registry(schema1, headers={"content-type": DOCKER_SCHEMA1[1]}))
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        await store.resolve(parse_query(f"docker://{HOST}/app:1"), Selection())
    await store.aclose()


@pytest.mark.anyio
async def test_a_manifest_that_does_not_match_its_claimed_digest_is_refused() -> None:
    store = _store(_registry(headers={"docker-content-digest": _digest(b"something else")}))
    with pytest.raises(DigestMismatch):
        await store.resolve(parse_query(f"docker://{HOST}/app:1"), Selection())
    bad = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch):
        await _store(_registry()).resolve(parse_query(f"docker://{HOST}/app@{bad}"), Selection())
    await store.aclose()


@pytest.mark.anyio
async def test_a_config_that_does_not_match_its_descriptor_is_refused() -> None:
    store = _store(_registry(config=CONFIG + b" "))
    with pytest.raises(DigestMismatch, match="config"):
        await store.resolve(parse_query(f"docker://{HOST}/app:1"), Selection())
    await store.aclose()


@pytest.mark.anyio
async def test_429_honours_retry_after_and_5xx_back_off() -> None:
    answers = [
        _error(429, "TOOMANYREQUESTS", "slow down", **{"retry-after": "3"}),
        _error(503, "UNAVAILABLE", "busy"),
    ]
    inner = _registry()

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else inner(request)

    sleeps = Sleeps()
    store = _store(handler, sleeps)
    [image] = await store.resolve(parse_query(f"docker://{HOST}/app:1"), Selection())
    assert image.config.raw == CONFIG
    assert sleeps.delays[0] == 3.0 and 0 < sleeps.delays[1] <= 0.4
    await store.aclose()


@pytest.mark.anyio
async def test_errors_name_registry_repository_status_code_and_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _error(403, "DENIED", "requested access to the resource is denied")

    store = _store(handler)
    with pytest.raises(RegistryError) as info:
        await store.resolve(parse_query(f"docker://{HOST}/team/app:1"), Selection())
    error = info.value
    assert (error.registry, error.repository, error.status, error.code) == (
        HOST,
        "team/app",
        403,
        "DENIED",
    )
    assert str(error) == (
        f"registry {HOST}, repository team/app: manifest 1: access denied anonymously "
        "(no credentials for this registry): requested access to the resource is denied "
        "(HTTP 403 DENIED)"
    )
    await store.aclose()


class _CutStream(httpx.AsyncByteStream):
    """A body that delivers ``data`` and then fails as if the connection dropped."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection")


@pytest.mark.anyio
@pytest.mark.parametrize("server_resumes", [True, False])
async def test_a_cut_blob_resumes_with_range_or_refetches(server_resumes: bool) -> None:
    blob = bytes(range(256)) * 2000  # 512000 bytes: cut after 300000, one chunk handed on
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        assert request.headers["accept-encoding"] == "identity"
        if len(ranges) == 1:
            return httpx.Response(200, stream=_CutStream(blob[:300_000]))
        start = int(request.headers["range"].split("=")[1].rstrip("-"))
        if server_resumes:
            headers = {"content-range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"}
            return httpx.Response(206, content=blob[start:], headers=headers)
        return httpx.Response(200, content=blob)

    store = _store(handler)
    source = store.source(parse_query(f"docker://{HOST}/app:1").reference)  # type: ignore[arg-type]
    got = b""
    async with source.open_blob(Descriptor("x", _digest(blob), len(blob))) as chunks:
        async for chunk in chunks:
            got += chunk
    assert got == blob
    assert ranges == [None, f"bytes={STREAM_CHUNK}-"]
    await store.aclose()


@pytest.mark.anyio
async def test_a_blob_that_keeps_failing_gives_up_with_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    sleeps = Sleeps()
    store = _store(handler, sleeps)
    source = store.source(parse_query(f"docker://{HOST}/app:1").reference)  # type: ignore[arg-type]

    async def read() -> None:
        async with source.open_blob(Descriptor("x", _digest(b"x"), 1)) as chunks:
            async for _ in chunks:
                pass

    with pytest.raises(StoreError, match=r"cannot connect .*gave up after 4 attempts"):
        await read()
    assert len(sleeps.delays) == 3
    await store.aclose()


@pytest.mark.anyio
async def test_bearer_tokens_are_fetched_once_per_scope_and_sent() -> None:
    token_calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            token_calls.append(request)
            return httpx.Response(200, json={"token": "tok-123", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer tok-123":
            return httpx.Response(
                401,
                headers={"www-authenticate": f'Bearer realm="http://{HOST}/token",service="svc"'},
            )
        return _registry()(request)

    store = _store(handler, creds="me:secret-pw")
    await store.resolve(parse_query(f"docker://{HOST}/app:1"), Selection())
    await store.resolve(parse_query(f"docker://{HOST}/app:2"), Selection())
    assert len(token_calls) == 1
    assert token_calls[0].url.params["scope"] == "repository:app:pull"
    assert token_calls[0].url.params["service"] == "svc"
    assert token_calls[0].headers["authorization"] == Credentials("me", "secret-pw").basic_header()
    await store.aclose()


@pytest.mark.anyio
async def test_credentials_are_not_sent_to_a_plain_http_token_realm_elsewhere() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, headers={"www-authenticate": 'Bearer realm="http://auth.example/token"'}
        )

    store = _store(handler, creds="me:secret-pw")
    with pytest.raises(RegistryError, match="refusing to send credentials") as info:
        await store.resolve(parse_query(f"docker://{HOST}/app:1"), Selection())
    assert "secret-pw" not in str(info.value)
    await store.aclose()
