"""One-shot image CLIs, no server: skopeo and oci-image-tool."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.peers.process import (
    COMMAND_TIMEOUT,
    PeerCommandError,
    peer_env,
    require_binary,
    run_command,
)


class Skopeo:
    """Runs skopeo with a private insecureAcceptAnything policy file.

    A temp ``--policy`` file is used (not the machine's /etc/containers/policy.json, which a
    fresh machine may lack), plus a private auth file and temp dir.
    """

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("skopeo")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.auth_file = workdir / "auth.json"
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        self.registries_d = workdir / "registries.d"
        self.registries_d.mkdir(exist_ok=True)

    def __call__(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        argv: list[str | os.PathLike[str]] = [
            self.binary,
            "--policy", self.policy,
            "--registries.d", self.registries_d,
            "--tmpdir", self.tmpdir,
        ]  # fmt: skip
        return run_command(
            [*argv, *args],
            check=check,
            input=input,
            timeout=timeout,
            env=peer_env({"REGISTRY_AUTH_FILE": str(self.auth_file)}),
        )

    def inspect(self, ref: str, *extra: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("inspect", *extra, ref).stdout)
        return result


class OciImageTool:
    """``oci-image-tool`` (1.0.0-rc1: validate types are image, manifest, imageIndex, config)."""

    def __init__(self) -> None:
        self.binary = require_binary("oci-image-tool")

    def __call__(
        self, *args: str | os.PathLike[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_command([self.binary, *args], check=check)

    def validate(
        self,
        path: str | os.PathLike[str],
        *,
        type_: str = "image",
        refs: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``oci-image-tool validate --type TYPE [--ref name=REF ...] PATH``.

        ``type_="image"`` validates an OCI image layout directory (or tar of one); there is
        no ``imageLayout`` type. ``refs`` are ``name=...`` style selectors without the
        ``--ref`` flag, e.g. ``["name=v1"]``.
        """
        argv: list[str | os.PathLike[str]] = ["validate", "--type", type_]
        for ref in refs:
            argv += ["--ref", ref]
        result = self(*argv, path, check=check)
        if check and "Validation succeeded" not in result.stdout:
            raise PeerCommandError(result.returncode, result.args, result.stdout, result.stderr)
        return result
