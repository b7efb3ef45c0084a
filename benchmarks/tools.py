"""The programs under test, invoked the way a user would: ``hatchway save`` and ``skopeo copy``."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from measure import Sample, run_child


def _compile_hatchway() -> None:
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("hatchway")
    if spec is not None and spec.submodule_search_locations:
        for where in spec.submodule_search_locations:
            compileall.compile_dir(where, quiet=1)


class Tools:
    """Locate ``hatchway`` and ``skopeo`` and run an export with each.

    ``hatchway`` is the console script beside this interpreter (not a pyenv shim, whose own
    start-up would be timed).  skopeo needs a signature policy even for local transports; it
    gets one that accepts anything, and a ``TMPDIR`` under the work directory for the
    temporary files it writes while decompressing layers.

    hatchway's own bytecode is compiled first.  ``pip install`` compiles an installed
    package, and an editable install writes ``__pycache__`` on its first import, so a user's
    ``hatchway`` starts from bytecode; but with ``PYTHONDONTWRITEBYTECODE`` set (some CI images
    and sandboxes set it) an editable checkout is compiled from source on every start, which
    adds ~80 ms to each timed command on this machine.
    """

    def __init__(self, work: Path) -> None:
        beside = Path(sys.executable).parent / "hatchway"
        found = str(beside) if beside.exists() else shutil.which("hatchway")
        if found is None:
            raise SystemExit("hatchway is not installed (pip install -e .)")
        self.hatchway = found
        _compile_hatchway()
        self.skopeo = shutil.which("skopeo")
        self.policy = work / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.tmpdir = work / "tmp"
        self.tmpdir.mkdir(exist_ok=True)

    def hatchway_save(self, store: Path, out: Path, *names: str, jobs: int | None = None) -> Sample:
        argv = [self.hatchway, "save", "--store", str(store), "-o", str(out), "-q"]
        if jobs is not None:
            argv += ["-j", str(jobs)]
        return run_child([*argv, *names])

    def skopeo_save(self, store: Path, tag: str, out: Path) -> Sample:
        if self.skopeo is None:
            raise SystemExit("skopeo is not installed (apt-get install -y skopeo)")
        env = {**os.environ, "TMPDIR": str(self.tmpdir)}
        return run_child(
            [
                self.skopeo,
                "--policy",
                str(self.policy),
                "copy",
                "--quiet",
                f"oci:{store}:{tag}",
                f"docker-archive:{out}:bench:{tag}",
            ],
            env=env,
        )
