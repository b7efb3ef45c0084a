"""A standalone containerd on a unix socket, driven with ``ctr``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.peers.process import (
    COMMAND_TIMEOUT,
    STARTUP_TIMEOUT,
    ManagedProcess,
    _check_socket_path,
    _stop_strays,
    require_binary,
    run_command,
    wait_until_ready,
)

CTR_NAMESPACE = "hatchwaytest"


class Containerd:
    """A standalone containerd (CRI plugin disabled) on a unix socket; ``ctr`` runs against it."""

    def __init__(self, process: ManagedProcess, workdir: Path, namespace: str) -> None:
        self.process = process
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        self.namespace = namespace
        self.ctr_binary = require_binary("ctr")
        self.startup_seconds = 0.0

    def ctr(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr -a SOCKET -n NAMESPACE ARGS...``.

        Note: a failed ``ctr images import`` exits non-zero but may leave the image name
        behind; check the exit code, not ``images ls``.
        """
        return run_command(
            [self.ctr_binary, "-a", self.socket, "-n", self.namespace, *args],
            check=check,
            input=input,
            timeout=timeout,
        )

    def image_names(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.split()

    def remove_all_images(self) -> None:
        names = self.image_names()
        if names:
            self.ctr("images", "rm", "--sync", *names)

    def stop(self) -> None:
        self.process.stop()
        _stop_strays(str(self.workdir))

    def __repr__(self) -> str:
        return f"<Containerd {self.socket} pid={self.process.pid}>"


def start_containerd(
    workdir: Path, *, namespace: str = CTR_NAMESPACE, timeout: float = STARTUP_TIMEOUT
) -> Containerd:
    """Start containerd with its root, state and sockets in ``workdir`` (no TCP listeners)."""
    binary = require_binary("containerd")
    workdir.mkdir(parents=True, exist_ok=True)
    sock = _check_socket_path(workdir / "containerd.sock")
    config = f"""\
version = 2
root = "{workdir / "root"}"
state = "{workdir / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{workdir / "debug.sock"}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir / "opt"}"
"""
    config_path = workdir / "config.toml"
    config_path.write_text(config)
    proc = ManagedProcess("containerd", [binary, "--config", config_path], workdir / "log")
    handle = Containerd(proc, workdir, namespace)

    def probe() -> bool:
        if not sock.exists():
            return False
        return handle.ctr("version", check=False, timeout=5).returncode == 0

    try:
        handle.startup_seconds = wait_until_ready(
            proc, probe, timeout=timeout, what=f"answer on {sock}"
        )
    except BaseException:
        handle.stop()
        raise
    return handle
