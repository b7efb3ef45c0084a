"""A stop signal is acted on whatever a worker thread waits for: a FIFO where a certificate
should be, a credential helper that hangs or never stops printing, a store whose
``index.json.lock`` another process holds, a reader that stops reading the archive.

Each case was a hang (or memory without bound) before; a test that still hung would fail at
its deadline, never hang CI.  The deadlines are bounds on a hang, far above what a healthy
run takes, not measurements.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import hatchway
from hatchway.blocking import ProgramError, lock_exclusive, run_program
from hatchway.testing.layout import LayoutBuilder
from tests.bounded import MAX_RSS, run_bounded
from tests.peers import Registry
from tests.support import Family
from tests.test_cli import HATCHWAY

#: A hang ends the test here (every case ends within a second when it works).
DEADLINE = 20.0


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _ended(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The exit status and stderr of ``proc``, which must end within ``DEADLINE``."""
    try:
        _, stderr = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("still running long after the signal") from None
    return proc.returncode, stderr.decode()


def _opened(pid: int | str, path: Path) -> bool:
    """Whether process ``pid`` holds a descriptor of ``path``."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        links = [os.readlink(fds / name) for name in os.listdir(fds)]
    except OSError:
        return False
    return str(path) in links


# -- files that must be regular ------------------------------------------------------------


@pytest.mark.parametrize("option", ["--ca-cert", "--client-cert", "--registries-conf"])
def test_a_fifo_as_a_certificate_option_is_a_usage_error(tmp_path: Path, option: str) -> None:
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    key = tmp_path / "key.pem"
    key.write_text("")
    args = ["save", "-q", option, str(fifo), "docker://127.0.0.1:1/app:1"]
    if option == "--client-cert":
        args[1:1] = ["--client-key", str(key)]
    result = run_bounded(args, deadline=DEADLINE)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '{option}'" in result.stderr
    assert "is not a regular file" in result.stderr


def test_a_fifo_in_certs_d_fails_at_once(tmp_path: Path) -> None:
    """A ``*.crt`` of the registry's certs.d directory that is a FIFO: the save used to wait
    for a writer, deaf to SIGTERM and SIGINT."""
    host = tmp_path / "certs.d" / "127.0.0.1:1"
    host.mkdir(parents=True)
    os.mkfifo(host / "ca.crt")
    result = run_bounded(
        ["save", "-q", "docker://127.0.0.1:1/app:1"],
        deadline=DEADLINE,
        env={"HATCHWAY_CERTS_D": str(tmp_path / "certs.d")},
    )
    assert result.returncode == 1
    assert result.lines == [
        f"hatchway: error: registry 127.0.0.1:1: cannot load CA certificate {host / 'ca.crt'}: "
        "is a FIFO, not a regular file"
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("which", ["ca_cert", "client_cert", "client_key"])
async def test_the_library_refuses_fifo_certificates(
    family: Family, tmp_path: Path, which: str
) -> None:
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    other = tmp_path / "other.pem"
    other.write_text("")
    files: dict[str, str | None] = {"ca_cert": None, "client_cert": None, "client_key": None}
    files[which] = str(fifo)
    if which != "ca_cert":
        files["client_cert" if which == "client_key" else "client_key"] = str(other)
    # Were the FIFO opened blocking, this writer would let the test end (and fail).
    unblock = threading.Timer(DEADLINE, lambda: os.close(os.open(fifo, os.O_WRONLY)))
    unblock.daemon = True
    unblock.start()
    try:
        with pytest.raises(hatchway.RegistryError, match="is a FIFO, not a regular file"):
            await hatchway.save(
                ["docker://127.0.0.1:1/app:1"],
                tmp_path / "o.tar",
                registry=hatchway.RegistryOptions(**files),  # type: ignore[arg-type]
            )
    finally:
        unblock.cancel()


@pytest.mark.peers
def test_a_fifo_blob_cannot_hang_a_push(tmp_path: Path, push_target: Registry, prefix: str) -> None:
    """A layer blob replaced by a FIFO: a push hashed it with a blocking ``open``."""
    root = tmp_path / "store"
    b = LayoutBuilder(root)
    layer = b.layer({"a": b"a\n"}, compression="gzip")
    b.tag(b.image([layer]), "app:1")
    b.save()
    b.blob_path(layer.digest).unlink()
    os.mkfifo(b.blob_path(layer.digest))
    result = run_bounded(
        ["push", "-q", "--store", str(root), "--to", f"{push_target.host}/{prefix}", "app:1"],
        deadline=DEADLINE,
    )
    assert result.returncode == 1, result.stderr
    assert "is a FIFO, not a regular file" in result.stderr
    assert len(result.lines) == 1


# -- credential helpers -----------------------------------------------------------------


def _helper(tmp_path: Path, body: str) -> dict[str, str]:
    """A ``docker-credential-hw`` whose ``get`` runs ``body`` (Python, after writing its pid
    to ``helper.pid``), as the default helper of a private ``$DOCKER_CONFIG``."""
    bin_dir, config = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "hw"}))
    helper = bin_dir / "docker-credential-hw"
    pid_file = tmp_path / "helper.pid"
    helper.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n{body}\n"
    )
    helper.chmod(0o755)
    return {
        "DOCKER_CONFIG": str(config),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return state in ("Z", "X")


def test_ctrl_c_kills_a_hanging_credential_helper(tmp_path: Path) -> None:
    """A helper that never answers kept the command alive for its 60 s timeout after
    Ctrl-C; now the helper is killed and the command stops at once."""
    env = _helper(tmp_path, "time.sleep(600)")
    proc = subprocess.Popen(
        [*HATCHWAY, "save", "-q", "-o", str(tmp_path / "o.tar"), "docker://127.0.0.1:1/app:1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    pid_file = tmp_path / "helper.pid"
    _wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", "the helper to start")
    helper = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    status, stderr = _ended(proc)
    assert (status, stderr) == (130, "hatchway: interrupted\n")
    assert _gone(helper)
    assert not (tmp_path / "o.tar").exists()


def test_a_helper_that_never_stops_printing_is_cut_off(tmp_path: Path) -> None:
    """``yes`` as a helper: its output filled memory (1 GB after a second) until the helper
    timeout.  Now it is killed after ``MAX_HELPER_OUTPUT`` bytes; the save goes on without
    credentials (and fails here for want of a registry)."""
    env = _helper(tmp_path, "os.execvp('yes', ['yes', 'x' * 4000])")
    result = run_bounded(["save", "-q", "docker://127.0.0.1:1/app:1"], deadline=DEADLINE, env=env)
    assert result.returncode == 1
    assert len(result.lines) == 1 and "cannot connect" in result.stderr
    assert result.max_rss < MAX_RSS, f"peak RSS {result.max_rss >> 20} MiB"
    assert _gone(int((tmp_path / "helper.pid").read_text()))


def test_run_program_caps_output_times_out_and_reports() -> None:
    with pytest.raises(ProgramError, match=r"printed more than 1000 bytes"):
        run_program(["yes"], b"", timeout=DEADLINE, output_limit=1000)
    with pytest.raises(ProgramError, match=r"printed more than 10 bytes"):
        run_program(["sh", "-c", "echo 0123456789abc >&2"], b"", timeout=DEADLINE, output_limit=10)
    with pytest.raises(ProgramError, match="timed out"):
        run_program(["sleep", "600"], b"", timeout=0.2, output_limit=10)
    with pytest.raises(ProgramError, match="cannot run"):
        run_program(["/nonexistent/helper"], b"", timeout=DEADLINE, output_limit=10)
    done = run_program(["sh", "-c", "cat; echo err >&2; exit 3"], b"in", timeout=DEADLINE,
                       output_limit=100)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"err\n")


@pytest.mark.anyio
async def test_run_program_ends_with_its_task(tmp_path: Path) -> None:
    """Cancelled while the program runs: the program is killed and the thread returns the
    cancellation (it is not abandoned, and nothing runs after)."""
    pid_file = tmp_path / "pid"
    argv = ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 600"]
    with anyio.fail_after(DEADLINE):  # a bound on a hang: the kill comes within a poll step
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await anyio.to_thread.run_sync(
                    lambda: run_program(argv, b"", timeout=600, output_limit=10)
                )
                raise AssertionError("the program ran to its end")

            tg.start_soon(run)
            started = lambda: pid_file.exists() and bool(pid_file.read_text().strip())  # noqa: E731
            await anyio.to_thread.run_sync(_wait_for, started, "the program to start")
            tg.cancel_scope.cancel()
    assert _gone(int(pid_file.read_text()))


# -- the store's index.json lock ------------------------------------------------------------


@pytest.fixture
def locked_store(family: Family) -> Iterator[Path]:
    """The store, its ``index.json.lock`` held by "another process" (another open file:
    flock locks conflict between open files, even within one process)."""
    lock = os.open(family.root / "index.json.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    # Released after the deadline in any case: a load deaf to its cancellation then commits,
    # and the test fails instead of waiting for ever.
    release = threading.Timer(DEADLINE, fcntl.flock, (lock, fcntl.LOCK_UN))
    release.daemon = True
    release.start()
    try:
        yield family.root / "index.json.lock"
    finally:
        release.cancel()
        os.close(lock)


def _lock_waiters(path: Path) -> int:
    """How many descriptors of this process are open on ``path``."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == str(path)
        except OSError:
            continue
    return count


def _archive(family: Family, tmp_path: Path) -> Path:
    archive = tmp_path / "tools.tar"
    subprocess.run(
        [*HATCHWAY, "save", "-q", "--store", str(family.root), "-o", str(archive), "tools"],
        check=True,
        timeout=120,
    )
    return archive


def test_ctrl_c_while_the_store_lock_is_held_elsewhere(
    family: Family, tmp_path: Path, locked_store: Path
) -> None:
    """Ctrl-C was ignored until the lock was free — and then the load committed and exited
    0.  Now it stops at once and ``index.json`` is untouched."""
    archive = _archive(family, tmp_path)
    before = (family.root / "index.json").read_bytes()
    proc = subprocess.Popen(
        [*HATCHWAY, "load", "-q", "--store", str(family.root), str(archive)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: _opened(proc.pid, locked_store), "the load to wait for the lock")
    proc.send_signal(signal.SIGINT)
    status, stderr = _ended(proc)
    assert (status, stderr) == (130, "hatchway: interrupted\n")
    assert (family.root / "index.json").read_bytes() == before


@pytest.mark.anyio
async def test_a_load_waiting_for_the_lock_is_cancelled_without_committing(
    family: Family, tmp_path: Path, locked_store: Path
) -> None:
    archive = _archive(family, tmp_path)
    index = family.root / "index.json"
    before = index.read_bytes()

    def waiting() -> bool:  # the load opened the lock file too (the fixture holds one)
        return _lock_waiters(locked_store) > 1

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:

            async def load() -> None:
                await hatchway.load([archive], store=family.root)
                raise AssertionError("the load committed while the lock was held")

            tg.start_soon(load)
            await anyio.to_thread.run_sync(_wait_for, waiting, "the load to wait for the lock")
            tg.cancel_scope.cancel()
    assert index.read_bytes() == before


@pytest.mark.anyio
async def test_lock_exclusive_gives_up_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    held = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    mine = os.open(path, os.O_RDWR)
    taken: list[bool] = []
    try:
        with anyio.fail_after(DEADLINE):
            with anyio.CancelScope() as scope:

                def take() -> None:
                    lock_exclusive(mine)
                    taken.append(True)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, take)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
        assert taken == []
        os.close(held)
        held = -1
        await anyio.to_thread.run_sync(lock_exclusive, mine)  # free: taken at once
    finally:
        for fd in (held, mine):
            if fd >= 0:
                os.close(fd)


# -- a reader that stops reading ----------------------------------------------------------


@pytest.fixture
def big_store(tmp_path: Path) -> Path:
    """An image whose archive is far larger than a pipe holds (64 KiB)."""
    root = tmp_path / "big-store"
    b = LayoutBuilder(root)
    b.tag(b.image([b.layer({"data": os.urandom(4 << 20)}, compression="none")]), "big:1")
    b.save()
    return root


def _blocked_on_a_pipe(pid: int) -> bool:
    """Whether a thread of ``pid`` waits for room in a pipe (its kernel wait channel)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if "pipe_w" in (task / "wchan").read_text():  # pipe_write, pipe_wait_writable...
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("how", ["stdout", "zstd-stdout", "fifo"])
def test_sigterm_while_the_reader_stops_reading(big_store: Path, tmp_path: Path, how: str) -> None:
    """``hatchway save ... | stalled-reader``: a write into the full pipe blocked its worker
    thread, and SIGTERM waited for the reader (for ever); the compressed writer's cleanup even
    waited for that write.  Now the write is abandoned and the command stops at once."""
    args = [*HATCHWAY, "save", "-q", "--store", str(big_store), "big:1"]
    if how == "fifo":
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        args += ["-o", str(fifo)]
        stdout = subprocess.DEVNULL
    else:
        read_end, write_end = os.pipe()
        stdout = write_end
        if how == "zstd-stdout":
            args += ["--compress", "zstd", "--compress-level", "1"]
    tmp = tmp_path / "tmp"  # where stdout's staging area goes
    tmp.mkdir()
    try:
        env = {**os.environ, "TMPDIR": str(tmp)}
        proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, env=env)
        if how != "fifo":
            os.close(write_end)
        _wait_for(lambda: _blocked_on_a_pipe(proc.pid), "a write to block on the full pipe")
        proc.send_signal(signal.SIGTERM)
        status, stderr = _ended(proc)
    finally:
        os.close(read_end)
    assert (status, stderr) == (143, "hatchway: terminated (SIGTERM)\n")
    assert list(tmp.iterdir()) == []
