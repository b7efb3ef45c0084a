"""Options for talking to registries: transport security, limits, timeouts and retries.

Pure values and small pure decisions (which scheme a host gets, how long to back off), so the
client's behaviour can be read here and tested without a network.

Transport rule (as Docker treats loopback registries): ``https`` for every host, except plain
``http`` for loopback hosts (``localhost``, ``127.0.0.0/8``, ``::1``) and for hosts named in
``insecure_registries``.  Docker Hub (``docker.io``) is served from ``registry-1.docker.io``.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

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


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """Everything that configures registry access for one run.

    ``creds`` (``USER:PASSWORD``) applies to every registry and wins over the credential
    files; otherwise credentials come from ``$REGISTRY_AUTH_FILE``, then
    ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``) — see
    :mod:`hatchway.transports.registry.credentials`.  ``use_credential_files=False`` ignores
    the files (a machine whose ``~/.docker/config.json`` must not apply).  ``ca_cert`` adds a
    PEM bundle of trusted CAs to the system's.
    ``max_connections_per_registry`` bounds concurrent requests to one registry host,
    inside the engine's global ``jobs``.  ``transport`` replaces the network (an
    ``httpx.AsyncBaseTransport``: a proxying transport, or ``httpx.MockTransport``).
    """

    creds: str | None = field(default=None, repr=False)
    insecure_registries: frozenset[str] = frozenset()
    ca_cert: str | None = None
    max_connections_per_registry: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    use_credential_files: bool = True
    user_agent: str = "hatchway"
    transport: object | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_connections_per_registry < 1:
            raise ValueError("max_connections_per_registry must be at least 1")
        if self.creds is not None and ":" not in self.creds:
            raise ValueError("creds must be USER:PASSWORD")
        if not isinstance(self.insecure_registries, frozenset):
            object.__setattr__(self, "insecure_registries", frozenset(self.insecure_registries))

    def scheme(self, host: str) -> str:
        """``http`` for loopback and insecure hosts, else ``https`` (see the module doc)."""
        if is_loopback(host) or host in self.insecure_registries:
            return "http"
        return "https"

    def base_url(self, host: str) -> str:
        """The registry API's base URL for a reference's domain."""
        api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
        return f"{self.scheme(host)}://{api_host}"


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
