"""Signals and special outputs: Ctrl-C, SIGTERM and SIGHUP stop a save mid-fetch with nothing
left behind; -o to a FIFO, a symlink or an existing file does what a user expects."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_proxy import FaultProxy, fault_proxy
from tests.peers import Registry
from tests.push_support import tags_of
from tests.registry_support import Lab
from tests.support import Family, read_archive
from tests.test_cli import HATCHWAY, run


@pytest.fixture
def slow_link(lab: Lab) -> Iterator[FaultProxy]:
    with fault_proxy(lab.registry.port) as proxy:
        proxy.reset(bandwidth=100_000.0)  # 100 kB/s: the big image takes minutes
        yield proxy


def _wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.peers
@pytest.mark.parametrize(
    ("signum", "status", "message"),
    [
        (signal.SIGINT, 130, "hatchway: interrupted"),
        (signal.SIGTERM, 143, "hatchway: terminated (SIGTERM)"),
        (signal.SIGHUP, 129, "hatchway: terminated (SIGHUP)"),
    ],
)
def test_signal_mid_fetch_leaves_nothing(
    slow_link: FaultProxy, tmp_path: Path, signum: int, status: int, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [*HATCHWAY, "save", "-q", "-o", str(out / "o.tar"), f"docker://{slow_link.host}/hw/big:1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(
            lambda: (
                any(p.name.startswith(".hatchway-staging-") for p in out.iterdir())
                and slow_link.blob_requests()
            ),
            "the save to start fetching blobs",
        )
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == status
    assert stderr.decode().strip().splitlines() == [message]
    assert list(out.iterdir()) == []


def test_output_to_a_fifo_streams_into_it(family: Family, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = run("save", "--store", str(family.root), "-o", str(fifo), "app:1.0")
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert read_archive(received[0]).json("manifest.json")[0]["RepoTags"] == ["app:1.0"]


def test_output_symlink_is_followed_and_mode_kept(family: Family, tmp_path: Path) -> None:
    target = tmp_path / "real.tar"
    target.write_bytes(b"old")
    target.chmod(0o600)
    link = tmp_path / "link.tar"
    link.symlink_to(target.name)
    result = run("save", "--store", str(family.root), "-o", str(link), "app:1.0")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert read_archive(target.read_bytes()).json("manifest.json")[0]["RepoTags"] == ["app:1.0"]


def test_closed_stdout_is_a_one_line_error(family: Family) -> None:
    result = subprocess.run(
        [*HATCHWAY, "save", "--store", str(family.root), "app:1.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hatchway: error: cannot write standard output")


@pytest.mark.peers
def test_sigterm_mid_push_leaves_no_staging_and_no_tag(
    lab: Lab, push_target: Registry, tmp_path: Path, prefix: str
) -> None:
    """A push stopped while it uploads exits 143, removes its staging directory and writes no
    tag: the manifests go last, after every blob."""
    stage = tmp_path / "stage"
    stage.mkdir()
    with fault_proxy(push_target.port) as slow:
        slow.reset(bandwidth=100_000.0)  # uploads of the 1.5 MB layers take many seconds
        proc = subprocess.Popen(
            [*HATCHWAY, "push", "-q", "--tmpdir", str(stage), "--to", f"{slow.host}/{prefix}",
             f"docker://{lab.registry.host}/hw/big:1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _wait_for(lambda: slow.count("PUT", "/blobs/uploads/") > 0, "an upload to start")
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    assert stderr.decode().strip().splitlines() == ["hatchway: terminated (SIGTERM)"]
    assert list(stage.iterdir()) == []
    assert tags_of(push_target, f"{prefix}/hw/big") == []
