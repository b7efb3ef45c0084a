"""Running peer binaries: lookup, environment, one-shot commands and managed servers.

``require_binary`` finds a peer's binary or fails the test with the Debian package that
provides it (``DEBIAN_PACKAGES``). ``run_command`` runs a peer CLI once; ``ManagedProcess``
starts a server that ``wait_until_ready`` polls and ``stop_pid`` stops by PID.

Outbound traffic guard: ``peer_env`` gives every peer ``HTTP(S)_PROXY`` pointing at a closed
loopback port, so an accidental pull from a public registry fails at once on loopback instead
of leaving the machine. Go never proxies loopback addresses, so the local registry still works.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"

#: Binary name -> Debian package that provides it.
DEBIAN_PACKAGES: dict[str, str] = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "containerd": "containerd",
    "ctr": "containerd",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "runc": "runc",
    "oci-image-tool": "oci-image-tool",
    "busybox": "busybox-static",
    "htpasswd": "apache2-utils",
    "podman": "podman",
}

#: Preferred absolute paths: the Debian packages' binaries win over anything earlier on PATH
#: (this machine also has an unrelated Docker 28 CLI in /usr/local/bin).
_PREFERRED_PATHS: dict[str, str] = {
    "docker": "/usr/bin/docker",
    "dockerd": "/usr/sbin/dockerd",
    "busybox": "/bin/busybox",
}

#: A closed loopback port ("discard"): anything that tries to use the proxy is refused at once.
_DEAD_PROXY = f"http://{LOOPBACK}:9"
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
COMMAND_TIMEOUT = 300.0
LOG_TAIL_LINES = 40


class PeerError(RuntimeError):
    """A peer component could not be started, answered wrongly or could not be stopped."""


class PeerCommandError(subprocess.CalledProcessError):
    """A peer CLI exited non-zero; ``str()`` includes its output, unlike the base class."""

    def __str__(self) -> str:
        parts = [super().__str__()]
        for label, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
            if text.strip():
                parts.append(f"--- {label} (tail) ---\n{_tail(text)}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- small helpers


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def require_binary(name: str, package: str | None = None) -> str:
    """Absolute path of ``name``; fails the test (never skips) naming the Debian package."""
    preferred = _PREFERRED_PATHS.get(name)
    if preferred and os.access(preferred, os.X_OK):
        return preferred
    found = shutil.which(name)
    if found is None:
        pkg = package or DEBIAN_PACKAGES.get(name, "?")
        pytest.fail(
            f"required binary {name!r} not found on PATH; install the Debian package {pkg!r}: "
            f"apt-get update && apt-get install -y {pkg}",
            pytrace=False,
        )
    return found


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller must tolerate a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for peer processes: no inherited Docker/containerd targets, dead proxy."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DOCKER_", "CONTAINERD_", "REGISTRY_AUTH_FILE"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[key] = _DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    if extra:
        env.update(extra)
    return env


def _check_socket_path(path: Path) -> Path:
    if len(str(path)) > _SUN_PATH_MAX:
        raise PeerError(f"unix socket path too long ({len(str(path))} > {_SUN_PATH_MAX}): {path}")
    return path


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a peer CLI, capture its output as text (UTF-8, undecodable bytes replaced).

    With ``check`` a non-zero exit raises :class:`PeerCommandError` carrying the output.
    Binary stdout is not supported: have the tool write to a file instead (``-o FILE``).
    """
    args = [os.fspath(a) for a in argv]
    data = input.encode() if isinstance(input, str) else input
    raw = subprocess.run(
        args,
        input=data,
        stdin=None if data is not None else subprocess.DEVNULL,
        capture_output=True,
        env=dict(env) if env is not None else peer_env(),
        timeout=timeout,
        check=False,
    )
    result = subprocess.CompletedProcess(
        args,
        raw.returncode,
        raw.stdout.decode(errors="replace"),
        raw.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise PeerCommandError(result.returncode, args, result.stdout, result.stderr)
    return result


# ---------------------------------------------------------------------- process management


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM the child if the test process dies without tearing down."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaping it if it is our child; zombies count as gone)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop one process by PID: SIGTERM, wait up to ``timeout``, then SIGKILL and wait.

    Returns True if it had to be killed. Never signals a process group or any other PID.
    """
    if pid <= 1:
        raise ValueError(f"refusing to signal pid {pid}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _is_gone(pid)  # reap if it was our zombie
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _is_gone(pid):
            return False
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while not _is_gone(pid):
        if time.monotonic() > deadline:
            raise PeerError(f"pid {pid} survived SIGKILL for 10 s")
        time.sleep(0.02)
    return True


class ManagedProcess:
    """A server process started by a test, its output in ``log_path``, stopped by PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else peer_env(),
                cwd=cwd,
                start_new_session=True,  # a ^C to pytest must not kill it before teardown
                preexec_fn=_die_with_parent,  # only calls prctl(PR_SET_PDEATHSIG)
            )
        self.pid = self.popen.pid
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return _tail(text, lines) or "<empty log>"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.popen.returncode is None:
            stop_pid(self.pid, timeout)
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"


def wait_until_ready(
    proc: ManagedProcess,
    probe: Callable[[], bool],
    *,
    timeout: float = STARTUP_TIMEOUT,
    what: str = "answer",
) -> float:
    """Poll ``probe`` until it returns True; returns the seconds since ``proc`` started.

    Raises :class:`PeerError` with the tail of the server's log if the server exits first
    or does not answer within ``timeout`` seconds. ``probe`` should swallow its own
    connection errors and return False.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if probe():
            return time.monotonic() - proc.started_at
        code = proc.popen.poll()
        if code is not None:
            raise PeerError(
                f"{proc.name} (pid {proc.pid}) exited with code {code} before it would "
                f"{what}; command: {' '.join(proc.argv)}\n"
                f"--- {proc.log_path} (tail) ---\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise PeerError(
                f"{proc.name} (pid {proc.pid}) did not {what} within {timeout:g} s; "
                f"command: {' '.join(proc.argv)}\n"
                f"--- {proc.log_path} (tail) ---\n{proc.log_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def _stop_strays(marker: str) -> None:
    """Stop by PID any process whose command line mentions ``marker`` (our unique temp dir).

    Catches grandchildren a daemon normally stops itself (dockerd's containerd, shims) when
    the daemon had to be killed.
    """
    own = os.getpid()
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in {own, 1}:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(PeerError):
                stop_pid(int(entry.name), timeout=5.0)
