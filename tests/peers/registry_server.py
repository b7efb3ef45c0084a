"""The CNCF distribution registry (``docker-registry``) on 127.0.0.1: plain HTTP, or HTTPS
when the config has ``http.tls`` (then ``start_registry`` needs a ``tls_context`` to probe it)."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.peers.process import (
    LOOPBACK,
    STARTUP_TIMEOUT,
    ManagedProcess,
    PeerError,
    free_port,
    require_binary,
    wait_until_ready,
)


def _http_probe(
    url: str,
    ok_statuses: frozenset[int] = frozenset({200}),
    context: ssl.SSLContext | None = None,
) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return int(response.status) in ok_statuses
        except urllib.error.HTTPError as err:
            return err.code in ok_statuses
        except (OSError, http.client.HTTPException):
            return False

    return probe


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


#: One access-log line (gorilla's combined format): ``HOST - - [date] "METHOD URI HTTP/1.1" ...``.
_ACCESS = re.compile(r'^\S+ - \S+ \[[^]]+\] "([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')


class Registry:
    """A running CNCF distribution registry on 127.0.0.1 (deletes enabled); ``url`` is
    ``https://...`` when it serves TLS.

    Its access log is on (``log.accesslog``): :meth:`requests` reads back every request it
    answered, so a test can count uploads, mounts and reads as the registry saw them.
    """

    def __init__(
        self,
        process: ManagedProcess,
        port: int,
        workdir: Path,
        config: dict[str, Any],
        scheme: str = "http",
    ) -> None:
        self.process = process
        self.port = port
        self.host = f"{LOOPBACK}:{port}"
        self.url = f"{scheme}://{self.host}"
        self.workdir = workdir
        self.root = workdir / "data"
        self.config = config
        self.startup_seconds = 0.0

    def ref(self, repository: str, tag: str = "latest") -> str:
        """A skopeo ``docker://`` reference into this registry."""
        return f"docker://{self.host}/{repository}:{tag}"

    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, uri, status)`` of every request answered so far, in order."""
        text = self.process.log_path.read_text(errors="replace")
        return [
            (m.group(1), m.group(2), int(m.group(3)))
            for m in map(_ACCESS.match, text.splitlines())
            if m is not None
        ]

    def stop(self) -> None:
        self.process.stop()

    def __repr__(self) -> str:
        return f"<Registry {self.url} pid={self.process.pid}>"


def start_registry(
    workdir: Path,
    extra_config: Mapping[str, Any] | None = None,
    *,
    timeout: float = STARTUP_TIMEOUT,
    ready_statuses: frozenset[int] = frozenset({200, 401}),
    tls_context: ssl.SSLContext | None = None,
) -> Registry:
    """Start ``docker-registry serve`` in ``workdir`` on a free loopback port.

    ``extra_config`` is deep-merged into the base config, e.g. for basic auth
    ``{"auth": {"htpasswd": {"realm": "r", "path": "/x/htpasswd"}}}`` or token auth
    ``{"auth": {"token": {...}}}``. The config is written as JSON (which is YAML).
    ``http.addr`` is always forced to 127.0.0.1. A port clash is retried with a new port.
    With ``http.tls`` in the config the registry serves HTTPS and is probed through
    ``tls_context`` (which must trust its certificate, and carry a client certificate when
    ``http.tls.clientcas`` demands one).
    """
    binary = require_binary("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    last_error: PeerError | None = None
    for attempt in range(3):
        port = free_port()
        config = _deep_merge(
            {
                "version": 0.1,
                "log": {"level": "info", "accesslog": {"disabled": False}},
                "storage": {
                    "filesystem": {"rootdirectory": str(workdir / "data")},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"secret": "hatchway-test-secret", "headers": {}},
            },
            extra_config or {},
        )
        config["http"]["addr"] = f"{LOOPBACK}:{port}"
        config_path = workdir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2))
        proc = ManagedProcess(
            "docker-registry",
            [binary, "serve", config_path],
            workdir / f"log.{attempt}",
        )
        scheme = "https" if "tls" in config["http"] else "http"
        if scheme == "https" and tls_context is None:
            raise PeerError("a TLS registry needs a tls_context to probe it")
        handle = Registry(proc, port, workdir, config, scheme)
        try:
            handle.startup_seconds = wait_until_ready(
                proc,
                _http_probe(f"{handle.url}/v2/", ready_statuses, tls_context),
                timeout=timeout,
                what=f"answer on {handle.url}/v2/",
            )
        except PeerError as err:
            proc.stop()
            if "address already in use" not in proc.log_tail():
                raise
            last_error = err
            continue
        return handle
    assert last_error is not None
    raise last_error
