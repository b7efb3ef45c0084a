"""podman, daemonless, with all of its state in one temporary directory (docs/peers.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.peers.process import COMMAND_TIMEOUT, peer_env, require_binary, run_command


class Podman:
    """Runs ``podman`` with a private root, run root and temp dir, the vfs storage driver,
    cgroupfs, file events, and a private accept-anything signature policy and empty
    registries configuration (so nothing is looked up on a registry)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("podman")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries = workdir / "registries.conf"
        self.registries.write_text("unqualified-search-registries = []\n")
        self.containers_conf = workdir / "containers.conf"
        self.containers_conf.write_text('[engine]\nevents_logger = "file"\n')

    def __call__(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        argv: list[str | os.PathLike[str]] = [
            self.binary,
            "--root", self.workdir / "root",
            "--runroot", self.workdir / "run",
            "--tmpdir", self.workdir / "tmp",
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
        ]  # fmt: skip
        env = peer_env(
            {
                "CONTAINERS_REGISTRIES_CONF": str(self.registries),
                "CONTAINERS_CONF": str(self.containers_conf),
                "TMPDIR": str(self.workdir / "tmp"),
            }
        )
        return run_command([*argv, *args], check=check, timeout=timeout, env=env)

    def load(
        self, archive: str | os.PathLike[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``podman load -i ARCHIVE`` with the private signature policy."""
        return self("load", "--signature-policy", self.policy, "-i", archive, check=check)

    def image_names(self) -> list[str]:
        out = self("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return sorted(line for line in out.split() if line)

    def remove_all_images(self) -> None:
        self("rmi", "--all", "--force", check=False)
