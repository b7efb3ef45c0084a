"""Registries as deployed, over TLS: real ``docker-registry`` servers with ``http.tls`` (and
``clientcas`` for mutual TLS) on loopback, certificates made in the test (tls_support).

What is checked: HTTPS first on loopback with a plain-HTTP fallback only for servers that do
not speak TLS; trust from ``--ca-cert``, certs.d directories (explicit roots, and under $HOME)
and client certificates; and that failures which cannot heal (untrusted, expired or misnamed
certificates, a demanded or rejected client certificate, a refused connection) fail at once —
no backoff sleeps asked for, well under 2 s with the real backoff — with one line that says
what happened and how to fix it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hatchway import RegistryError, RegistryOptions, RetryPolicy, Selection
from hatchway.reference import parse_query
from hatchway.transports.registry.source import RegistryStore
from tests.peers import free_port
from tests.registry_support import Lab, Sleeps, save_from_registry
from tests.support import read_archive
from tests.tls_support import Pki, TlsLab

pytestmark = [pytest.mark.anyio, pytest.mark.peers]


def _opts(sleeps: Sleeps | None = None, **changes: Any) -> RegistryOptions:
    """Hermetic options: no credential files, no registries.conf, no certs.d unless given."""
    changes.setdefault("retry", RetryPolicy(sleep=sleeps or Sleeps()))
    changes.setdefault("use_credential_files", False)
    changes.setdefault("use_registries_conf", False)
    changes.setdefault("certs_dirs", ())
    return RegistryOptions(**changes)


async def _tags(
    host: str, out: Path, opts: RegistryOptions, repo: str = "hw/docker:1"
) -> list[list[str]]:
    raw = await save_from_registry([f"docker://{host}/{repo}"], out, opts)
    return [e["RepoTags"] for e in read_archive(raw).json("manifest.json")]


async def _fails(host: str, opts: RegistryOptions, tmp_path: Path) -> RegistryError:
    """Save from ``host``; it must fail with a RegistryError and write nothing."""
    out = tmp_path / "never.tar"
    with pytest.raises(RegistryError) as info:
        await save_from_registry([f"docker://{host}/hw/docker:1"], out, opts)
    assert not out.exists()
    assert "\n" not in str(info.value)
    return info.value


# -- trust that works -------------------------------------------------------------------


async def test_ca_cert_on_127_0_0_1_and_on_localhost(tls_lab: TlsLab, tmp_path: Path) -> None:
    registry = tls_lab.tls
    opts = _opts(ca_cert=str(tls_lab.pki.ca))
    assert await _tags(registry.host, tmp_path / "a.tar", opts) == [
        [f"{registry.host}/hw/docker:1"]
    ]
    local = f"localhost:{registry.port}"
    assert await _tags(local, tmp_path / "b.tar", opts) == [[f"{local}/hw/docker:1"]]


async def test_https_is_chosen_for_a_tls_loopback_registry_and_http_for_a_plain_one(
    tls_lab: TlsLab, lab: Lab
) -> None:
    store = RegistryStore(_opts(ca_cert=str(tls_lab.pki.ca)))
    try:
        for registry in (tls_lab.tls, lab.registry):
            await store.resolve(parse_query(f"docker://{registry.host}/hw/docker:1"), Selection())
        assert store.client(tls_lab.tls.host).base_url == f"https://{tls_lab.tls.host}"
        assert store.client(lab.registry.host).base_url == f"http://{lab.registry.host}"
    finally:
        await store.aclose()


async def test_many_names_resolved_at_once_from_a_plain_loopback_registry(
    lab: Lab, tmp_path: Path
) -> None:
    """Seven names at once on a fresh client: one request finds out that the host does not
    speak TLS while the others wait for its answer.  (When each raced TLS and plain HTTP on its
    own, the plain answers held the connections their TLS attempts waited for: a hang.)"""
    names = ["hw/docker:1", "hw/oci:1", "hw/family-a:1", "hw/family-b:1", "hw/family-c:1"]
    names += ["hw/big:1", "hw/multi:1"]
    for connections in (1, 2, 8):
        opts = _opts(max_connections_per_registry=connections)
        with anyio.fail_after(30):
            raw = await save_from_registry(
                [f"docker://{lab.registry.host}/{n}" for n in names], tmp_path / "a.tar", opts
            )
        assert len(read_archive(raw).json("manifest.json")) == len(names)


async def test_a_certs_d_ca_is_trusted(tls_lab: TlsLab, tmp_path: Path) -> None:
    host = tls_lab.tls.host
    root = tmp_path / "certs.d"
    (root / host).mkdir(parents=True)
    (root / host / "ca.crt").write_bytes(tls_lab.pki.ca.read_bytes())
    tags = await _tags(host, tmp_path / "a.tar", _opts(certs_dirs=(str(root),)))
    assert tags == [[f"{host}/hw/docker:1"]]


async def test_certs_d_under_home_is_found_by_default(
    tls_lab: TlsLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = f"localhost:{tls_lab.tls.port}"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HATCHWAY_CERTS_D", raising=False)
    directory = tmp_path / ".config" / "containers" / "certs.d" / host
    directory.mkdir(parents=True)
    (directory / "registry-ca.crt").write_bytes(tls_lab.pki.ca.read_bytes())
    tags = await _tags(host, tmp_path / "a.tar", _opts(certs_dirs=None))
    assert tags == [[f"{host}/hw/docker:1"]]


async def test_insecure_registry_skips_verification(tls_lab: TlsLab, tmp_path: Path) -> None:
    host = tls_lab.self_signed.host
    opts = _opts(insecure_registries=frozenset({host}))
    assert await _tags(host, tmp_path / "a.tar", opts) == [[f"{host}/hw/docker:1"]]


async def test_a_client_certificate_from_certs_d_opens_a_mutual_tls_registry(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    host = tls_lab.mtls.host
    root = tmp_path / "certs.d"
    (root / host).mkdir(parents=True)
    (root / host / "ca.crt").write_bytes(tls_lab.pki.ca.read_bytes())
    tls_lab.pki.client("client", directory=root / host)
    tags = await _tags(host, tmp_path / "a.tar", _opts(certs_dirs=(str(root),)))
    assert tags == [[f"{host}/hw/docker:1"]]


async def test_an_explicit_client_certificate_opens_a_mutual_tls_registry(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    pair = tls_lab.pki.client("explicit")
    opts = _opts(ca_cert=str(tls_lab.pki.ca), client_cert=str(pair.cert), client_key=str(pair.key))
    host = tls_lab.mtls.host
    assert await _tags(host, tmp_path / "a.tar", opts) == [[f"{host}/hw/docker:1"]]


# -- failures that cannot heal: at once, one line, with the fix -------------------------


async def test_an_untrusted_certificate_fails_at_once_naming_the_fix(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    host = tls_lab.tls.host
    error = await _fails(host, _opts(sleeps, certs_dirs=(str(tmp_path / "c"),)), tmp_path)
    assert sleeps.delays == []  # not retried
    message = str(error)
    assert error.registry == host
    assert "TLS certificate not trusted: certificate signed by an unknown authority" in message
    assert "--ca-cert" in message and f"{tmp_path / 'c' / host}/" in message


async def test_untrusted_fails_in_well_under_two_seconds_with_the_real_backoff(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    host = tls_lab.tls.host
    started = time.monotonic()
    error = await _fails(host, _opts(retry=RetryPolicy()), tmp_path)
    assert time.monotonic() - started < 2.0
    assert "certificate" in str(error)


async def test_a_self_signed_certificate_says_so(tls_lab: TlsLab, tmp_path: Path) -> None:
    error = await _fails(tls_lab.self_signed.host, _opts(), tmp_path)
    assert "TLS certificate not trusted: self-signed certificate" in str(error)


async def test_a_certificate_for_another_name_says_so(tls_lab: TlsLab, tmp_path: Path) -> None:
    opts = _opts(ca_cert=str(tls_lab.pki.ca))
    error = await _fails(tls_lab.wrong_name.host, opts, tmp_path)
    assert "certificate is for another IP address" in str(error)
    assert "reissue the certificate" in str(error)


async def test_an_expired_certificate_says_so(tls_lab: TlsLab, tmp_path: Path) -> None:
    error = await _fails(tls_lab.expired.host, _opts(ca_cert=str(tls_lab.pki.ca)), tmp_path)
    assert "TLS certificate not trusted: certificate expired" in str(error)
    assert "renew" in str(error)


async def test_a_missing_client_certificate_fails_at_once(tls_lab: TlsLab, tmp_path: Path) -> None:
    sleeps = Sleeps()
    error = await _fails(tls_lab.mtls.host, _opts(sleeps, ca_cert=str(tls_lab.pki.ca)), tmp_path)
    assert sleeps.delays == []
    assert "demands a client certificate" in str(error)
    assert "--client-cert FILE --client-key FILE" in str(error)


async def test_a_client_certificate_from_another_ca_is_rejected_at_once(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    stranger = Pki(tmp_path / "other-pki").client("stranger")
    opts = _opts(
        sleeps,
        ca_cert=str(tls_lab.pki.ca),
        client_cert=str(stranger.cert),
        client_key=str(stranger.key),
    )
    error = await _fails(tls_lab.mtls.host, opts, tmp_path)
    assert sleeps.delays == []
    assert f"rejected the client certificate {stranger.cert}" in str(error)


async def test_a_certs_d_client_certificate_without_its_key_is_an_error(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    host = tls_lab.mtls.host
    root = tmp_path / "certs.d"
    pair = tls_lab.pki.client("lonely", directory=root / host)
    pair.key.unlink()
    error = await _fails(host, _opts(certs_dirs=(str(root),)), tmp_path)
    assert f"client certificate {pair.cert} has no key {pair.key}" in str(error)


async def test_an_unreadable_ca_cert_is_an_error(tls_lab: TlsLab, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    error = await _fails(tls_lab.tls.host, _opts(ca_cert=str(bogus)), tmp_path)
    assert f"cannot load CA certificate {bogus}" in str(error)


async def test_a_client_key_that_does_not_match_its_certificate_is_an_error(
    tls_lab: TlsLab, tmp_path: Path
) -> None:
    one, other = tls_lab.pki.client("one"), tls_lab.pki.client("other")
    opts = _opts(client_cert=str(one.cert), client_key=str(other.key))
    error = await _fails(tls_lab.mtls.host, opts, tmp_path)
    assert f"cannot load client certificate {one.cert} with key {other.key}: " in str(error)
    assert "key values mismatch" in str(error)


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
async def test_a_refused_connection_fails_at_once(name: str, tmp_path: Path) -> None:
    host = f"{name}:{free_port()}"
    sleeps = Sleeps()
    error = await _fails(host, _opts(sleeps), tmp_path)
    assert sleeps.delays == []
    assert str(error) == (
        f"registry {host}, repository hw/docker: manifest 1: "
        "cannot connect: connection refused (is the registry running?)"
    )
    started = time.monotonic()
    await _fails(host, _opts(retry=RetryPolicy()), tmp_path)
    assert time.monotonic() - started < 2.0


# -- the scheme decision, with the network replaced (no real part answers this way) -------


def _not_tls(request: httpx.Request) -> httpx.Response:
    """What a plain-HTTP server looks like to a TLS client: the handshake reads garbage."""
    if request.url.scheme == "https":
        import ssl

        error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
        error.reason = "WRONG_VERSION_NUMBER"
        raise httpx.ConnectError(str(error)) from error
    return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})


async def test_a_remote_host_that_does_not_speak_tls_is_not_downgraded(tmp_path: Path) -> None:
    opts = _opts(transport=httpx.MockTransport(_not_tls))
    error = await _fails("reg.example", opts, tmp_path)
    assert "does not speak TLS" in str(error)
    assert "--insecure-registry reg.example" in str(error)


async def test_an_insecure_remote_host_that_does_not_speak_tls_gets_plain_http(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return _not_tls(request)

    opts = _opts(transport=httpx.MockTransport(handler), insecure_registries={"reg.example"})
    with pytest.raises(Exception, match="No such image"):
        await save_from_registry(["docker://reg.example/a/b:1"], tmp_path / "o.tar", opts)
    assert sorted(seen) == [
        "http://reg.example/v2/a/b/manifests/1",
        "https://reg.example/v2/a/b/manifests/1",
    ]


async def test_an_undecided_host_is_asked_over_plain_http_without_waiting_for_tls_to_fail(
    tmp_path: Path,
) -> None:
    """The plain request goes out at once: here TLS fails only after the plain request arrived
    (sent one after the other, the save would wait for ever)."""
    plain_arrived = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            plain_arrived.set()
        else:
            await plain_arrived.wait()
        return _not_tls(request)

    opts = _opts(transport=httpx.MockTransport(handler), insecure_registries={"reg.example"})
    with anyio.fail_after(10), pytest.raises(Exception, match="No such image"):
        await save_from_registry(["docker://reg.example/a/b:1"], tmp_path / "o.tar", opts)


async def test_a_host_that_answers_over_tls_keeps_https_even_if_plain_http_answers_first() -> None:
    plain_answered = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            plain_answered.set()
            return httpx.Response(500, json={"errors": [{"code": "X", "message": "plain"}]})
        await plain_answered.wait()
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})

    opts = _opts(transport=httpx.MockTransport(handler), insecure_registries={"reg.example"})
    store = RegistryStore(opts)
    try:
        with anyio.fail_after(10), pytest.raises(Exception, match="No such image"):
            await store.resolve(parse_query("docker://reg.example/a/b:1"), Selection())
        assert store.client("reg.example").base_url == "https://reg.example"
    finally:
        await store.aclose()
