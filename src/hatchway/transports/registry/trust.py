"""Trust for registry connections: CAs, client certificates, certs.d, and what a failure means.

Which certificates a host gets (:func:`host_trust`, reads a few small files):

* the system's CAs (OpenSSL's default paths, so ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` apply);
* ``--ca-cert FILE`` (``RegistryOptions.ca_cert``);
* every ``*.crt`` file (a CA bundle) in ``ROOT/HOST[:PORT]/`` of each certs.d root, as Docker
  and the containers tools read them.  Roots, in order: ``~/.config/containers/certs.d``,
  ``/etc/containers/certs.d``, ``/etc/docker/certs.d`` — or ``$HATCHWAY_CERTS_D``
  (``os.pathsep``-separated) or ``RegistryOptions.certs_dirs`` instead;
* a client certificate for registries that demand one (mutual TLS): ``--client-cert`` and
  ``--client-key``, else the first ``NAME.cert`` + ``NAME.key`` pair found in those
  directories.  A ``.cert`` without its ``.key`` (or the reverse) is an error, as in Docker.

:func:`configure` loads that into an ``ssl.SSLContext`` (blocking: run it in a thread).
:func:`diagnose` reads a failed connection's exception chain and says what went wrong and
whether trying again can help: a certificate that fails verification, a client certificate
the registry demands or rejects, a refused connection, a name that does not resolve — none of
those heal by retrying, so the client reports them at once, each with its fix.  A server that
answers TLS with plain HTTP is recognised too (``NOT_TLS``): that is where a loopback or
``--insecure-registry`` host falls back to HTTP.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import anyio

from hatchway.errors import RegistryError
from hatchway.files import FileTooLarge, open_regular
from hatchway.limits import MAX_DOCUMENT_SIZE

#: Replaces the certs.d roots when set (``os.pathsep``-separated; empty: none).
CERTS_D_ENV = "HATCHWAY_CERTS_D"


def certs_roots(
    configured: tuple[str, ...] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, ...]:
    """The certs.d roots searched, in order (see the module docstring)."""
    if configured is not None:
        return tuple(Path(p) for p in configured)
    env = os.environ if env is None else env
    override = env.get(CERTS_D_ENV)
    if override is not None:
        return tuple(Path(p) for p in override.split(os.pathsep) if p)
    home = Path(env.get("HOME") or Path.home())
    return (
        home / ".config" / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    )


@dataclass(frozen=True, slots=True)
class HostTrust:
    """What a connection to ``host`` trusts and presents (file names; nothing loaded yet)."""

    host: str
    verify: bool
    ca_files: tuple[str, ...] = ()
    client_cert: str | None = None
    client_key: str | None = None
    #: The certs.d directories this host would be configured by (existing or not), for hints.
    candidates: tuple[str, ...] = ()


def host_trust(
    host: str,
    *,
    verify: bool,
    ca_cert: str | None,
    client_cert: str | None,
    client_key: str | None,
    roots: tuple[Path, ...],
) -> HostTrust:
    """Collect ``host``'s CAs and client certificate (reads directory listings)."""
    cas = [ca_cert] if ca_cert else []
    pair = (client_cert, client_key) if client_cert and client_key else None
    candidates = tuple(str(root / host) for root in roots)
    for directory in candidates:
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise RegistryError(host, None, f"cannot read {directory}: {exc.strerror}") from None
        for name in names:
            path = os.path.join(directory, name)
            if name.endswith(".crt"):
                cas.append(path)
            elif name.endswith(".cert"):
                key = path.removesuffix(".cert") + ".key"
                if name.removesuffix(".cert") + ".key" not in names:
                    raise RegistryError(
                        host,
                        None,
                        f"client certificate {path} has no key {key} "
                        "(CA certificates must be named *.crt)",
                    )
                pair = pair or (path, key)
            elif name.endswith(".key") and name.removesuffix(".key") + ".cert" not in names:
                raise RegistryError(
                    host, None, f"key {path} has no client certificate {path[:-4]}.cert"
                )
    return HostTrust(
        host,
        verify,
        tuple(cas),
        pair[0] if pair else None,
        pair[1] if pair else None,
        candidates,
    )


def configure(context: ssl.SSLContext, trust: HostTrust) -> None:
    """Load ``trust`` into a fresh ``PROTOCOL_TLS_CLIENT`` context (blocking file reads).

    Each file must be a regular file of at most ``MAX_DOCUMENT_SIZE`` bytes, checked before
    OpenSSL opens it: OpenSSL's own open of a FIFO would wait for a writer, on a worker
    thread that no signal can stop, and it would read a device for ever.
    """
    if not trust.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        for path in trust.ca_files:
            try:
                _check_file(path)
                context.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(
                    trust.host, None, f"cannot load CA certificate {path}: {_reason(exc)}"
                ) from None
    if trust.client_cert is not None and trust.client_key is not None:
        try:
            _check_file(trust.client_cert)
            _check_file(trust.client_key)
            context.load_cert_chain(trust.client_cert, trust.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(
                trust.host,
                None,
                f"cannot load client certificate {trust.client_cert} "
                f"with key {trust.client_key}: {_reason(exc)}",
            ) from None


def _check_file(path: str) -> None:
    """Refuse what is not a regular file of a sane size, without blocking on it."""
    fd, size = open_regular(path)
    os.close(fd)
    if size > MAX_DOCUMENT_SIZE:
        raise FileTooLarge(path, size, MAX_DOCUMENT_SIZE)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------------- diagnosis


class Failure(Enum):
    """What a failed connection attempt means."""

    CERTIFICATE = "certificate"  # the server's certificate failed verification
    CLIENT_CERTIFICATE = "client certificate"  # the server demanded or rejected ours
    NOT_TLS = "not TLS"  # the server answered the TLS handshake with something else
    REFUSED = "refused"  # nothing listens there
    UNKNOWN_HOST = "unknown host"  # the name does not resolve (and will not on a retry)
    TRANSIENT = "transient"  # anything else: a timeout, a reset, a cut body


@dataclass(frozen=True, slots=True)
class Diagnosis:
    failure: Failure
    #: Why, for a user ("self-signed certificate", "connection refused").
    reason: str

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help (everything but ``TRANSIENT``)."""
        return self.failure is not Failure.TRANSIENT


#: Verification results (OpenSSL's X509_V_ERR_*) in words.
_VERIFY_REASONS = {
    2: "certificate signed by an unknown authority",
    9: "certificate not yet valid (check this machine's clock)",
    10: "certificate expired",
    18: "self-signed certificate",
    19: "certificate signed by an unknown authority (self-signed CA in the chain)",
    20: "certificate signed by an unknown authority",
    21: "certificate signed by an unknown authority",
    62: "certificate is for another host name",
    64: "certificate is for another IP address",
}
#: Handshake failures that mean "this is not a TLS server" (OpenSSL reasons).
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)
#: Alerts a server sends when it wants a (different) client certificate.
_CLIENT_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_NAME_NOT_FOUND = frozenset(
    code for code in (getattr(socket, n, None) for n in ("EAI_NONAME", "EAI_NODATA")) if code
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of any exception group among them."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def diagnose(exc: BaseException) -> Diagnosis:
    """What a failed connection attempt (an ``httpx`` transport error, or an ``ssl.SSLError``
    that escaped it) means; see :class:`Failure`."""
    refused = False
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            code = link.verify_code
            reason = _VERIFY_REASONS.get(code) or (link.verify_message or "verification failed")
            return Diagnosis(Failure.CERTIFICATE, reason)
        if isinstance(link, ssl.SSLError) and link.reason:
            if link.reason in _NOT_TLS:
                return Diagnosis(Failure.NOT_TLS, "the server does not speak TLS")
            if link.reason in _CLIENT_ALERTS:
                alert = link.reason.split("_ALERT_", 1)[-1].replace("_", " ").lower()
                return Diagnosis(Failure.CLIENT_CERTIFICATE, alert)
        if isinstance(link, socket.gaierror) and link.errno in _NAME_NOT_FOUND:
            return Diagnosis(Failure.UNKNOWN_HOST, link.strerror or "name does not resolve")
        if isinstance(link, ConnectionRefusedError) or (
            isinstance(link, OSError) and link.errno == errno.ECONNREFUSED
        ):
            refused = True
    if refused:
        return Diagnosis(Failure.REFUSED, "connection refused")
    return Diagnosis(Failure.TRANSIENT, "")


#: How long a handshake check waits for the server's verdict on a client certificate.
CLIENT_CHECK_SECONDS = 1.0


async def check_client_certificate(
    host: str, port: int, context: ssl.SSLContext
) -> Diagnosis | None:
    """Whether ``host`` refuses the client certificate ``context`` presents (or its absence).

    With TLS 1.3 a server checks the client certificate only after the client has finished
    its handshake, and typically answers a bad one with an alert and a close.  When the
    client has already sent its request by then, the server's close resets the connection
    and the alert is often lost: the failure looks like a transient reset.  This check
    repeats the handshake and sends nothing, so the alert arrives intact (with TLS 1.2 it
    comes during the handshake).  ``None`` when the server accepted the handshake or the
    check was inconclusive.
    """
    try:
        with anyio.move_on_after(CLIENT_CHECK_SECONDS):
            stream = await anyio.connect_tcp(
                host, port, ssl_context=context, tls_hostname=host, tls_standard_compatible=False
            )
            async with stream:
                await stream.receive()
    except Exception as exc:  # every failure is evidence here, or nothing
        diagnosis = diagnose(exc)
        if diagnosis.failure is Failure.CLIENT_CERTIFICATE:
            return diagnosis
    return None


def explain(diagnosis: Diagnosis, trust: HostTrust, api_host: str) -> str:
    """The message for a permanent failure, to follow the registry's name: what happened and
    how to fix it.  ``api_host`` is named only where it differs from ``trust.host``."""
    host = trust.host
    same = api_host == host
    of, to, at = ("", "", "") if same else (f" of {api_host}", f" to {api_host}", f" {api_host}")
    dirs = " or ".join(f"{d}/" for d in _hint_dirs(trust))
    failure = diagnosis.failure
    if failure is Failure.CERTIFICATE:
        reason = diagnosis.reason
        if "host name" in reason or "IP address" in reason:
            fix = f"use a name its certificate lists, or reissue the certificate for {host}"
        elif "expired" in reason or "not yet valid" in reason:
            fix = "renew the registry's certificate (or correct this machine's clock)"
        else:
            fix = f"trust its CA with --ca-cert FILE, or put the CA as a *.crt file in {dirs}"
        return f"TLS certificate{of} not trusted: {reason}; {fix}"
    if failure is Failure.CLIENT_CERTIFICATE:
        if trust.client_cert is None:
            return (
                f"the registry{at} demands a client certificate (TLS alert: "
                f"{diagnosis.reason}); give --client-cert FILE --client-key FILE, "
                f"or put NAME.cert and NAME.key in {dirs}"
            )
        return (
            f"the registry{at} rejected the client certificate {trust.client_cert} "
            f"(TLS alert: {diagnosis.reason})"
        )
    if failure is Failure.REFUSED:
        return f"cannot connect{to}: connection refused (is the registry running?)"
    if failure is Failure.UNKNOWN_HOST:
        return f"cannot connect{to}: unknown host ({diagnosis.reason})"
    if failure is Failure.NOT_TLS:
        return (
            f"the registry{at} does not speak TLS; if it serves plain HTTP, "
            f"name it with --insecure-registry {host}"
        )
    return f"cannot connect{to}"


def _hint_dirs(trust: HostTrust) -> tuple[str, ...]:
    """Where to suggest putting certificates: the per-user and the Docker directory."""
    if len(trust.candidates) <= 2:
        return trust.candidates
    return (trust.candidates[0], trust.candidates[-1])
