"""Run the CLI the way the hostile-input tests need: bounded in time and memory, measured.

A regression that makes hatchway hang or grow without bound must fail the test instead of
hanging CI or exhausting the machine, so every run here has a deadline (the process is killed
after it, and the test fails) and an address-space limit (``RLIMIT_AS``: an allocation beyond
it fails inside the child instead of on the machine).  The child's peak resident memory comes
from ``wait4``'s resource usage for that one process, not from ``RUSAGE_CHILDREN``, which is a
high-water mark over every child the test process ever had — and the child is started by a
small launcher (:data:`_LAUNCHER`), not forked from the test process: Linux carries a
process's peak RSS across ``fork`` and ``exec``, so a child forked from pytest, which grows past
200 MiB over the whole suite, would report at least pytest's size as its own.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.test_cli import HATCHWAY

#: Hang-prone runs end here at the latest (a healthy one takes well under a second).
DEADLINE = 30.0
#: Address space the child may map: far above what a save needs (~40 MiB resident, plus
#: thread stacks and malloc arenas reserved but untouched), far below the machine's memory.
ADDRESS_SPACE = 4 << 30
#: A bounded run stays under this peak resident size (a save of small images needs ~40 MiB).
MAX_RSS = 200 << 20


@dataclass(frozen=True)
class Bounded:
    """How a bounded run ended."""

    returncode: int
    stdout: bytes
    stderr: str
    seconds: float
    max_rss: int  # bytes

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


#: Run as ``python -c _LAUNCHER AS FSIZE USAGE COMMAND...``: set the limits (``FSIZE`` -1: none),
#: run COMMAND as its own child — forked from this small interpreter, so that its peak RSS is
#: its own — write that child's peak RSS (bytes) to the file USAGE, and exit as it exited.
_LAUNCHER = """
import os, resource, signal, sys
address_space, file_size, usage = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
if file_size >= 0:
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[4], sys.argv[4:])
_, status, rusage = os.wait4(pid, 0)
with open(usage, "w") as out:
    out.write(str(rusage.ru_maxrss * 1024))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_bounded(
    args: Sequence[str],
    *,
    deadline: float = DEADLINE,
    env: Mapping[str, str] | None = None,
    max_file_size: int | None = None,
) -> Bounded:
    """Run ``hatchway ARGS`` with stdin closed; fail the test if it outlives ``deadline``.
    ``max_file_size`` caps each file the child writes (``RLIMIT_FSIZE``: beyond it the child
    is killed), for a run that a regression would make fill the disk."""
    with tempfile.TemporaryDirectory() as scratch:
        usage = Path(scratch) / "usage"
        limits = [str(ADDRESS_SPACE), str(-1 if max_file_size is None else max_file_size)]
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, *limits, str(usage), *HATCHWAY, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # the launcher and its child: killed together
        )
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [
            threading.Thread(target=lambda: out.append(stdout.read()), daemon=True),
            threading.Thread(target=lambda: err.append(stderr.read()), daemon=True),
        ]
        for reader in readers:
            reader.start()
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() - started > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise AssertionError(f"hatchway {' '.join(args)} still running after {deadline} s")
            time.sleep(0.01)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        for reader in readers:
            reader.join(timeout=10)
        stdout.close()
        stderr.close()
        max_rss = int(usage.read_text()) if usage.exists() else 0
    return Bounded(
        proc.returncode,
        out[0] if out else b"",
        (err[0] if err else b"").decode(errors="replace"),
        seconds,
        max_rss,
    )


def assert_one_error_line(result: Bounded) -> str:
    """Exit 1 or 2, no traceback, exactly one ``hatchway: error:`` line; returns it."""
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.lines if line.startswith("hatchway: error:")]
    assert len(errors) == 1 and len(result.lines) == 1, result.stderr
    return errors[0]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """What a tree holds, without opening anything that is not a regular file (a FIFO would
    block, a device never end): per path its mode, size and mtime, plus the sha256 of small
    regular files and the target of symlinks."""
    seen: dict[str, tuple[int, int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        extra = ""
        if stat.S_ISLNK(info.st_mode):
            extra = os.readlink(path)
        elif stat.S_ISREG(info.st_mode) and info.st_size <= 16 << 20:
            extra = hashlib.sha256(path.read_bytes()).hexdigest()
        seen[str(path.relative_to(root))] = (
            info.st_mode,
            info.st_size,
            info.st_mtime_ns,
            extra,
        )
    return seen
