"""Options for talking to registries: transport security, trust, limits, timeouts and retries.

Pure values and small pure decisions (which security a host gets, how long to back off), so
the client's behaviour can be read here and tested without a network.

Transport rule (Docker's): HTTPS first for every host.  Only for loopback hosts (``localhost``,
``127.0.0.0/8``, ``::1``) and hosts named in ``insecure_registries`` does the client fall back
to plain HTTP, and only when the server turns out not to speak TLS at all; an insecure host's
certificate is also not verified (:class:`Security`).  The client decides once per host.
Docker Hub (``docker.io``) is served from ``registry-1.docker.io``.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import Enum

import anyio

from hatchway.limits import SEGMENTS
from hatchway.reference import DOCKER_HUB

#: Where Docker Hub's registry API lives (``docker.io`` names only the namespace).
DOCKER_HUB_API = "registry-1.docker.io"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried: exponential backoff with jitter.

    A request is retried at most ``retries`` times after its first attempt when the connection
    fails, the body is cut short, or the registry answers 429, 502, 503 or 504.  Attempt *n*
    (from 0) waits ``min(max_delay, base_delay * 2**n)`` scaled by a random factor in
    ``[1 - jitter, 1]``; a 429's ``Retry-After`` is honoured up to ``max_retry_after``.
    ``sleep`` performs the waits (tests pass one that returns at once).
    """

    retries: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    jitter: float = 0.5
    max_retry_after: float = 60.0
    sleep: Sleep = field(default=anyio.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * (2.0**attempt))
        factor: float = random.uniform(1.0 - self.jitter, 1.0)
        return backoff * factor


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed to connect, and between bytes while reading or writing."""

    connect: float = 10.0
    read: float = 60.0
    write: float = 60.0


class Security(Enum):
    """How the client connects to one registry host (see the module docstring)."""

    #: TLS with the certificate verified; nothing else.
    HTTPS = "https"
    #: Loopback: verified TLS, or plain HTTP when the server does not speak TLS.
    HTTPS_OR_HTTP = "https-or-http"
    #: ``--insecure-registry``: TLS without verification, or plain HTTP when the server does
    #: not speak TLS.
    INSECURE = "insecure"

    @property
    def verify(self) -> bool:
        """Whether the server's certificate is verified."""
        return self is not Security.INSECURE

    @property
    def may_fall_back(self) -> bool:
        """Whether plain HTTP is tried when the server does not speak TLS."""
        return self is not Security.HTTPS


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """Everything that configures registry access for one run.

    ``creds`` (``USER:PASSWORD``) applies to every registry and wins over the credential
    files; otherwise credentials come from ``$REGISTRY_AUTH_FILE``, then
    ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``) — see
    :mod:`hatchway.transports.registry.credentials`.  ``use_credential_files=False`` ignores
    the files (a machine whose ``~/.docker/config.json`` must not apply).

    Trust (:mod:`hatchway.transports.registry.trust`): the system's CAs (``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` honoured), plus ``ca_cert`` (a PEM bundle), plus the ``*.crt`` files of
    each certs.d directory named after the host; a client certificate from ``client_cert`` and
    ``client_key`` (both or neither), else from a certs.d directory's ``*.cert``/``*.key`` pair.
    ``certs_dirs`` replaces the certs.d roots searched (``None``: ``$HATCHWAY_CERTS_D`` if set,
    else ``~/.config/containers/certs.d``, ``/etc/containers/certs.d``,
    ``/etc/docker/certs.d``; ``()``: none).

    Mirrors (:mod:`hatchway.transports.registry.mirrors`): ``registries_conf`` names a
    containers-registries.conf(5) file to follow (``None``: ``$CONTAINERS_REGISTRIES_CONF``,
    else ``~/.config/containers/registries.conf``, else ``/etc/containers/registries.conf``,
    whichever exists); ``use_registries_conf=False`` follows none.

    ``max_connections_per_registry`` bounds concurrent requests to one registry host,
    inside the engine's global ``jobs``.  ``ranges_per_blob`` is how many byte ranges of one
    big blob may be fetched at once (default 4, never more than half the connections; ``1``
    fetches every blob in one request).  ``transport`` replaces the network (an
    ``httpx.AsyncBaseTransport``: a proxying transport, or ``httpx.MockTransport``).
    """

    creds: str | None = field(default=None, repr=False)
    insecure_registries: frozenset[str] = frozenset()
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    certs_dirs: tuple[str, ...] | None = None
    registries_conf: str | None = None
    use_registries_conf: bool = True
    max_connections_per_registry: int = 8
    ranges_per_blob: int = SEGMENTS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    use_credential_files: bool = True
    user_agent: str = "hatchway"
    transport: object | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_connections_per_registry < 1:
            raise ValueError("max_connections_per_registry must be at least 1")
        if self.ranges_per_blob < 1:
            raise ValueError("ranges_per_blob must be at least 1")
        if self.creds is not None and ":" not in self.creds:
            raise ValueError("creds must be USER:PASSWORD")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        if not isinstance(self.insecure_registries, frozenset):
            object.__setattr__(self, "insecure_registries", frozenset(self.insecure_registries))
        if self.certs_dirs is not None and not isinstance(self.certs_dirs, tuple):
            object.__setattr__(self, "certs_dirs", tuple(self.certs_dirs))

    def security(self, host: str) -> Security:
        """How ``host[:port]`` is reached (see the module docstring)."""
        if host in self.insecure_registries:
            return Security.INSECURE
        if is_loopback(host):
            return Security.HTTPS_OR_HTTP
        return Security.HTTPS

    def with_insecure(self, host: str) -> RegistryOptions:
        """These options with ``host`` added to ``insecure_registries`` (for an endpoint that
        registries.conf marks ``insecure``)."""
        if host in self.insecure_registries:
            return self
        return replace(self, insecure_registries=self.insecure_registries | {host})


def api_host(host: str) -> str:
    """Where a reference's domain serves the registry API (Docker Hub is special)."""
    return DOCKER_HUB_API if host == DOCKER_HUB else host


def split_host_port(host: str) -> str:
    """The host part of ``host[:port]`` (also ``[v6]:port``), brackets removed."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` names this machine: ``localhost``, ``127.0.0.0/8`` or ``::1``."""
    name = split_host_port(host).lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
