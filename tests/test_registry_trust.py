"""trust.py without a network: where certificates come from (certs.d roots and files) and what a
failed connection means.  Failures a loopback server cannot produce (a name that does not
resolve, a resolver that is down, each TLS verification result) are built as the stack raises
them: httpx's error caused by httpcore's, caused by the socket or ssl error."""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from hatchway import RegistryError, Selection
from hatchway.reference import parse_query
from hatchway.transports.registry.options import RegistryOptions, RetryPolicy
from hatchway.transports.registry.source import RegistryStore
from hatchway.transports.registry.trust import (
    CERTS_D_ENV,
    Diagnosis,
    Failure,
    HostTrust,
    certs_roots,
    diagnose,
    explain,
    host_trust,
)
from tests.registry_support import Sleeps


def _wrapped(
    cause: BaseException, kind: type[httpx.TransportError] = httpx.ConnectError
) -> Exception:
    """``cause`` as httpx delivers it: an httpx error from an httpcore-like error from it."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise OSError(str(inner)) from inner
    except OSError as middle:
        try:
            raise kind(str(middle)) from middle
        except httpx.TransportError as outer:
            return outer


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code = code
    error.verify_message = message
    return error


def _ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}]")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("cause", "failure", "reason"),
    [
        (_verify_error(18, "self-signed certificate"), Failure.CERTIFICATE, "self-signed"),
        (_verify_error(20, "unable to get local issuer"), Failure.CERTIFICATE, "unknown author"),
        (_verify_error(10, "certificate has expired"), Failure.CERTIFICATE, "expired"),
        (_verify_error(62, "Hostname mismatch"), Failure.CERTIFICATE, "another host name"),
        (_verify_error(99, "something new"), Failure.CERTIFICATE, "something new"),
        (_ssl_error("WRONG_VERSION_NUMBER"), Failure.NOT_TLS, "does not speak TLS"),
        (_ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), Failure.CLIENT_CERTIFICATE, "required"),
        (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), Failure.CLIENT_CERTIFICATE, "bad certificate"),
        (_ssl_error("UNEXPECTED_EOF_WHILE_READING"), Failure.TRANSIENT, ""),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Failure.REFUSED, "refused"),
        (
            ExceptionGroup("all attempts failed", [ConnectionRefusedError(111, "x")]),
            Failure.REFUSED,
            "refused",
        ),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Failure.UNKNOWN_HOST, ""),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), Failure.TRANSIENT, ""),
        (ConnectionResetError(errno.ECONNRESET, "reset"), Failure.TRANSIENT, ""),
        (TimeoutError(), Failure.TRANSIENT, ""),
    ],
)
def test_diagnose_reads_the_whole_exception_chain(
    cause: BaseException, failure: Failure, reason: str
) -> None:
    diagnosis = diagnose(_wrapped(cause))
    assert diagnosis.failure is failure
    assert reason in diagnosis.reason
    assert diagnosis.permanent is (failure is not Failure.TRANSIENT)


def test_a_raw_ssl_error_is_diagnosed_too() -> None:
    assert diagnose(_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE")).failure is Failure.CLIENT_CERTIFICATE


def test_explanations_name_the_fix() -> None:
    trust = HostTrust("reg:5000", True, candidates=("/u/certs.d/reg:5000", "/etc/x", "/etc/d/reg"))
    unknown = explain(Diagnosis(Failure.CERTIFICATE, "self-signed certificate"), trust, "reg:5000")
    assert unknown == (
        "TLS certificate not trusted: self-signed certificate; trust its CA with --ca-cert FILE, "
        "or put the CA as a *.crt file in /u/certs.d/reg:5000/ or /etc/d/reg/"
    )
    hub = explain(
        Diagnosis(Failure.REFUSED, "connection refused"), HostTrust("docker.io", True), "reg-1"
    )
    assert hub == "cannot connect to reg-1: connection refused (is the registry running?)"
    with_cert = HostTrust("reg:5000", True, client_cert="/c.cert", client_key="/c.key")
    rejected = explain(Diagnosis(Failure.CLIENT_CERTIFICATE, "unknown ca"), with_cert, "reg:5000")
    assert (
        rejected == "the registry rejected the client certificate /c.cert (TLS alert: unknown ca)"
    )


def test_certs_d_roots_default_to_the_containers_and_docker_directories(tmp_path: Path) -> None:
    assert certs_roots(env={"HOME": str(tmp_path)}) == (
        tmp_path / ".config" / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    )
    assert certs_roots(env={CERTS_D_ENV: "/a:/b", "HOME": "/h"}) == (Path("/a"), Path("/b"))
    assert certs_roots(env={CERTS_D_ENV: ""}) == ()
    assert certs_roots(("/x",), env={CERTS_D_ENV: "/a"}) == (Path("/x"),)


def test_host_trust_collects_cas_from_every_root_and_the_first_client_pair(tmp_path: Path) -> None:
    first, second = tmp_path / "one" / "reg:5000", tmp_path / "two" / "reg:5000"
    for directory in (first, second):
        directory.mkdir(parents=True)
    (first / "a.crt").write_text("x")
    (first / "me.cert").write_text("x")
    (first / "me.key").write_text("x")
    (second / "b.crt").write_text("x")
    (second / "other.cert").write_text("x")
    (second / "other.key").write_text("x")
    (second / "README").write_text("ignored")
    roots = (tmp_path / "one", tmp_path / "missing", tmp_path / "two")
    trust = host_trust(
        "reg:5000", verify=True, ca_cert="/ca.pem", client_cert=None, client_key=None, roots=roots
    )
    assert trust.ca_files == ("/ca.pem", str(first / "a.crt"), str(second / "b.crt"))
    assert (trust.client_cert, trust.client_key) == (str(first / "me.cert"), str(first / "me.key"))
    explicit = host_trust(
        "reg:5000", verify=True, ca_cert=None, client_cert="/c", client_key="/k", roots=roots
    )
    assert (explicit.client_cert, explicit.client_key) == ("/c", "/k")
    (second / "stray.key").write_text("x")
    with pytest.raises(RegistryError, match=r"stray\.key has no client certificate"):
        host_trust(
            "reg:5000", verify=True, ca_cert=None, client_cert=None, client_key=None, roots=roots
        )


def test_client_cert_and_key_go_together() -> None:
    with pytest.raises(ValueError, match="give both or neither"):
        RegistryOptions(client_cert="/c")


@pytest.mark.anyio
async def test_a_name_that_does_not_resolve_is_not_retried() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise _wrapped(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    sleeps = Sleeps()
    options = RegistryOptions(
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(sleep=sleeps),
        use_credential_files=False,
        use_registries_conf=False,
        certs_dirs=(),
    )
    store = RegistryStore(options)
    try:
        with pytest.raises(RegistryError) as info:
            await store.resolve(parse_query("docker://no-such.example/app:1"), Selection())
    finally:
        await store.aclose()
    assert str(info.value) == (
        "registry no-such.example, repository app: manifest 1: "
        "cannot connect: unknown host (Name or service not known)"
    )
    assert sleeps.delays == []
