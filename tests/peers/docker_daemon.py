"""A private dockerd on a unix socket, driven with the Debian ``docker`` CLI."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.peers.process import (
    COMMAND_TIMEOUT,
    STARTUP_TIMEOUT,
    ManagedProcess,
    PeerError,
    _check_socket_path,
    _stop_strays,
    peer_env,
    require_binary,
    run_command,
    wait_until_ready,
)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float = 2.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _unix_http_probe(socket_path: Path, path: str, expect: bytes) -> Callable[[], bool]:
    def probe() -> bool:
        if not socket_path.exists():
            return False
        conn = _UnixHTTPConnection(socket_path)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status == 200 and response.read().strip() == expect
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return probe


class DockerDaemon:
    """A private dockerd (vfs, no bridge/iptables) with its own managed containerd."""

    def __init__(self, process: ManagedProcess, workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.docker_binary = require_binary("docker")
        self.client_config = workdir / "client-config"
        self.client_config.mkdir(exist_ok=True)
        self.startup_seconds = 0.0

    def docker(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://SOCKET ARGS...`` with a private client config dir.

        Run containers with ``--network none`` (there is no bridge).
        """
        return run_command(
            [self.docker_binary, "-H", self.host, *args],
            check=check,
            input=input,
            timeout=timeout,
            env=peer_env({"DOCKER_CONFIG": str(self.client_config)}),
        )

    def remove_all_images(self) -> None:
        """``docker load`` skips layers it already has: call this between negative tests."""
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", *containers)
        # Removing a child may already remove its untagged parents (images loaded through
        # the legacy path form chains), so remove one round at a time until none is left.
        for _ in range(10):
            images = self.docker("images", "-aq").stdout.split()
            if not images:
                return
            self.docker("rmi", "-f", *sorted(set(images)), check=False)
        raise PeerError(f"images left after removal: {self.docker('images', '-a').stdout}")

    def stop(self) -> None:
        self.process.stop()
        # dockerd stops its managed containerd on SIGTERM; after a SIGKILL it would not.
        _stop_strays(str(self.workdir))

    def __repr__(self) -> str:
        return f"<DockerDaemon {self.host} pid={self.process.pid}>"


def start_dockerd(workdir: Path, *, timeout: float = STARTUP_TIMEOUT) -> DockerDaemon:
    """Start dockerd as docs/peers.md says, everything it owns kept inside ``workdir``.

    ``--config-file`` isolates it from /etc/docker/daemon.json and moves the trust key
    (otherwise /etc/docker/key.json). dockerd still creates /run/docker/plugins (hard-coded).
    """
    binary = require_binary("dockerd")
    require_binary("runc")
    require_binary("containerd")
    workdir.mkdir(parents=True, exist_ok=True)
    sock = _check_socket_path(workdir / "docker.sock")
    exec_root = workdir / "exec"
    _check_socket_path(exec_root / "containerd" / "containerd.sock.ttrpc")
    daemon_json = workdir / "daemon.json"
    daemon_json.write_text(json.dumps({"deprecated-key-path": str(workdir / "key.json")}))
    argv: list[str | os.PathLike[str]] = [
        binary,
        "--config-file", daemon_json,
        "--data-root", workdir / "root",
        "--exec-root", exec_root,
        "--pidfile", workdir / "dockerd.pid",
        "-H", f"unix://{sock}",
        "--bridge", "none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--storage-driver", "vfs",
        "--containerd-namespace", "hatchway-dockerd",
        "--containerd-plugins-namespace", "hatchway-dockerd-plugins",
    ]  # fmt: skip
    proc = ManagedProcess("dockerd", argv, workdir / "log")
    handle = DockerDaemon(proc, workdir)
    try:
        handle.startup_seconds = wait_until_ready(
            proc,
            _unix_http_probe(sock, "/_ping", b"OK"),
            timeout=timeout,
            what=f"answer /_ping on {sock}",
        )
    except BaseException:
        handle.stop()
        raise
    return handle
