"""podman, daemonless, with every piece of its state inside one temporary directory.

podman runs as root here but touches nothing of the machine's own storage: ``--root`` and
``--runroot`` put images and runtime state under the directory, ``--storage-driver vfs``
needs no overlay mounts, ``--cgroup-manager cgroupfs`` no systemd, ``--events-backend file``
no journal; ``TMPDIR`` keeps the copies ``podman load`` makes of an archive there too, and a
private, empty ``registries.conf`` means no name is ever resolved against a public registry
(docs/peers.md, podman).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.peers.process import (
    COMMAND_TIMEOUT,
    _stop_strays,
    peer_env,
    require_binary,
    run_command,
)

#: Containers get these limits: the defaults podman derives from a root shell can exceed what
#: the sandbox's kernel grants a child.
RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


class Podman:
    """``podman(*args)`` runs podman with its state under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("podman")
        self.workdir = workdir
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.registries_conf = workdir / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.containers_conf = workdir / "containers.conf"
        self.containers_conf.write_text('[engine]\nevents_logger = "file"\n')
        self._global = [
            "--root", str(workdir / "root"),
            "--runroot", str(workdir / "run"),
            "--tmpdir", str(workdir / "libpod"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
        ]  # fmt: skip

    def __call__(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        return run_command(
            [self.binary, *self._global, *args],
            check=check,
            timeout=timeout,
            env=peer_env(
                {
                    "TMPDIR": str(self.tmpdir),
                    "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
                    "CONTAINERS_CONF": str(self.containers_conf),
                }
            ),
        )

    def load(
        self, archive: str | os.PathLike[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``podman load -i ARCHIVE`` with the private accept-anything signature policy."""
        return self("load", "--signature-policy", self.policy, "-i", archive, check=check)

    def image_names(self) -> list[str]:
        """``repository:tag`` of every image (``<none>:<none>`` for untagged ones), sorted."""
        out = self("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return sorted(out.split())

    def remove_all_images(self) -> None:
        self("rmi", "--all", "--force", check=False)

    def stop(self) -> None:
        """Stop by PID anything podman left running that mentions the directory (conmon)."""
        _stop_strays(str(self.workdir))

    def __repr__(self) -> str:
        return f"<Podman {self.workdir}>"
