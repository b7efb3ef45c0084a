"""Timing on a shared, noisy machine: child processes measured with ``wait4``, medians, ratios.

Every benchmark compares several *contenders* doing the same job in one run.  They are run
round-robin (A B C, A B C, ...) rather than A A A, B B B, so that a burst of load from a
neighbour hits every contender about equally, and each is summarised by the median of its
repetitions.  Reported ratios are ratios of medians.

A child process is measured for wall time, user and system CPU seconds and peak RSS, through
GNU ``time`` (see :func:`run_child` for why not ``wait4`` or ``RUSAGE_CHILDREN`` directly).
CPU / wall above 1.0 means the contender kept more than one core busy.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: GNU time, to measure a child's own peak RSS (see :func:`run_child`).
TIME = shutil.which("time", path="/usr/bin:/bin")


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run.  ``maxrss`` is in bytes (0 when not measured)."""

    wall: float
    user: float = 0.0
    sys: float = 0.0
    maxrss: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def median(samples: Sequence[Sample]) -> Sample:
    """The per-field median of ``samples`` (each field on its own)."""
    return Sample(
        statistics.median(s.wall for s in samples),
        statistics.median(s.user for s in samples),
        statistics.median(s.sys for s in samples),
        int(statistics.median(s.maxrss for s in samples)),
    )


class ChildFailed(RuntimeError):
    pass


def run_child(
    argv: Sequence[str], *, stdout_path: str | None = None, env: dict[str, str] | None = None
) -> Sample:
    """Run ``argv`` to completion and measure it; raise :class:`ChildFailed` on a non-zero exit.

    ``stdout_path`` receives the child's standard output (else it is discarded).  The child is
    started through GNU ``time`` when it is installed: Linux carries a process's peak RSS
    across ``fork`` and ``exec``, so a child forked straight from this (large) interpreter
    reports at least this interpreter's RSS; forked from the small ``time`` binary, it reports
    its own.
    """
    with tempfile.TemporaryDirectory() as tmp:
        usage_file = os.path.join(tmp, "usage")
        err_file = os.path.join(tmp, "stderr")
        launcher = [TIME, "-f", "%U %S %M", "-o", usage_file] if TIME else []
        with (
            open(stdout_path or os.devnull, "wb") as out,
            open(err_file, "wb") as err,
        ):
            start = time.perf_counter()
            proc = subprocess.Popen([*launcher, *argv], stdout=out, stderr=err, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            with open(err_file, "rb") as f:
                message = f.read().decode(errors="replace").strip()
            raise ChildFailed(f"{argv[0]} exited {proc.returncode}: {message[-2000:]}")
        if TIME:
            with open(usage_file) as f:
                user, system, maxrss_kib = f.read().split()[-3:]
            return Sample(wall, float(user), float(system), int(maxrss_kib) * 1024)
    return Sample(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024)


def run_inline(fn: Callable[[], object]) -> Sample:
    """Run ``fn`` in this process; CPU time counts every thread of this process and any child
    processes ``fn`` waited for."""
    before = _cpu()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = _cpu()
    return Sample(wall, after[0] - before[0], after[1] - before[1])


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


@dataclass
class Contender:
    """One way of doing the job: ``run`` measures it once, ``cleanup`` runs after each run
    (outside the timing)."""

    name: str
    run: Callable[[], Sample]
    cleanup: Callable[[], None] = lambda: None


def settle() -> None:
    """Write back dirty pages now, so one run's output is not flushed during the next run."""
    os.sync()


def round_robin(
    contenders: Sequence[Contender], reps: int, log: Callable[[str], None]
) -> dict[str, list[Sample]]:
    """Run every contender ``reps`` times, interleaved; return the samples by name."""
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for rep in range(reps):
        for contender in contenders:
            settle()
            sample = contender.run()
            contender.cleanup()
            samples[contender.name].append(sample)
            log(
                f"  [{rep + 1}/{reps}] {contender.name}: {sample.wall:.2f} s"
                f" (cpu {sample.cpu:.2f} s"
                + (f", peak RSS {sample.maxrss / 2**20:.0f} MiB)" if sample.maxrss else ")")
            )
    return samples


def warm(paths: Sequence[str]) -> None:
    """Read ``paths`` once so that every contender starts with them in the page cache."""
    buf = bytearray(1 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
