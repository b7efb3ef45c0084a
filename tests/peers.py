"""Real peer components (registry, skopeo, containerd, dockerd, oci-image-tool) for tests.

Every server listens only on 127.0.0.1 or on a unix socket inside its own temporary
directory, is started lazily by the first test that asks for it, and is stopped by PID
(SIGTERM, then SIGKILL after a grace period) at the end of the session, after which its
directory is removed. How each component is started follows ``docs/peers.md``.

A missing binary makes the fixture fail (never skip) with the Debian package to install.

Outbound traffic guard: every peer runs with ``HTTP(S)_PROXY`` pointing at a closed loopback
port, so an accidental pull from a public registry fails at once on loopback instead of
leaving the machine. Go never proxies loopback addresses, so the local registry still works.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = [
    "CTR_NAMESPACE",
    "Containerd",
    "DockerDaemon",
    "ManagedProcess",
    "OciImageTool",
    "PeerCommandError",
    "PeerError",
    "Registry",
    "Skopeo",
    "containerd",
    "dockerd",
    "free_port",
    "oci_image_tool",
    "registry",
    "require_binary",
    "run_command",
    "skopeo",
    "start_containerd",
    "start_dockerd",
    "start_registry",
    "static_busybox",
    "stop_pid",
    "wait_until_ready",
]

CTR_NAMESPACE = "hatchwaytest"
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


def static_busybox() -> Path:
    """Path of Debian's statically linked busybox (package busybox-static), checked to be static.

    A dynamically linked busybox would not run inside a one-layer image.
    """
    path = Path(require_binary("busybox"))
    if _elf_has_interpreter(path):
        pytest.fail(
            f"{path} is dynamically linked; install the Debian package 'busybox-static'",
            pytrace=False,
        )
    return path


def _elf_has_interpreter(path: Path) -> bool:
    """True if the 64-bit little-endian ELF file has a PT_INTERP header (is dynamically linked)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PeerError(f"{path}: not a 64-bit little-endian ELF file")
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    pt_interp = 3
    return any(
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        == pt_interp
        for i in range(phnum)
    )


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


def _http_probe(url: str, ok_statuses: frozenset[int] = frozenset({200})) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status) in ok_statuses
        except urllib.error.HTTPError as err:
            return err.code in ok_statuses
        except (OSError, http.client.HTTPException):
            return False

    return probe


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float = 2.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _unix_http_probe(socket_path: Path, path: str, expect: bytes) -> Callable[[], bool]:
    def probe() -> bool:
        if not socket_path.exists():
            return False
        conn = _UnixHTTPConnection(socket_path)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status == 200 and response.read().strip() == expect
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return probe


def _unmount_under(directory: Path) -> None:
    """Lazily unmount anything still mounted at or below ``directory`` (left by a killed daemon)."""
    prefix = str(directory.resolve())
    mounts: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                point = fields[1].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


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


def _remove_tree(directory: Path) -> None:
    _unmount_under(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise PeerError(f"could not remove {directory}")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ------------------------------------------------------------------------------- registry


class Registry:
    """A running CNCF distribution registry (plain HTTP on 127.0.0.1, deletes enabled)."""

    def __init__(
        self, process: ManagedProcess, port: int, workdir: Path, config: dict[str, Any]
    ) -> None:
        self.process = process
        self.port = port
        self.host = f"{LOOPBACK}:{port}"
        self.url = f"http://{self.host}"
        self.workdir = workdir
        self.root = workdir / "data"
        self.config = config
        self.startup_seconds = 0.0

    def ref(self, repository: str, tag: str = "latest") -> str:
        """A skopeo ``docker://`` reference into this registry."""
        return f"docker://{self.host}/{repository}:{tag}"

    def stop(self) -> None:
        self.process.stop()

    def __repr__(self) -> str:
        return f"<Registry {self.url} pid={self.process.pid}>"


def start_registry(
    workdir: Path,
    extra_config: Mapping[str, Any] | None = None,
    *,
    timeout: float = STARTUP_TIMEOUT,
    ready_statuses: frozenset[int] = frozenset({200, 401}),
) -> Registry:
    """Start ``docker-registry serve`` in ``workdir`` on a free loopback port.

    ``extra_config`` is deep-merged into the base config, e.g. for basic auth
    ``{"auth": {"htpasswd": {"realm": "r", "path": "/x/htpasswd"}}}`` or token auth
    ``{"auth": {"token": {...}}}``. The config is written as JSON (which is YAML).
    ``http.addr`` is always forced to 127.0.0.1. A port clash is retried with a new port.
    """
    binary = require_binary("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    last_error: PeerError | None = None
    for attempt in range(3):
        port = free_port()
        config = _deep_merge(
            {
                "version": 0.1,
                "log": {"level": "info", "accesslog": {"disabled": False}},
                "storage": {
                    "filesystem": {"rootdirectory": str(workdir / "data")},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"secret": "hatchway-test-secret", "headers": {}},
            },
            extra_config or {},
        )
        config["http"]["addr"] = f"{LOOPBACK}:{port}"
        config_path = workdir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2))
        proc = ManagedProcess(
            "docker-registry",
            [binary, "serve", config_path],
            workdir / f"log.{attempt}",
        )
        handle = Registry(proc, port, workdir, config)
        try:
            handle.startup_seconds = wait_until_ready(
                proc,
                _http_probe(f"{handle.url}/v2/", ready_statuses),
                timeout=timeout,
                what=f"answer on {handle.url}/v2/",
            )
        except PeerError as err:
            proc.stop()
            if "address already in use" not in proc.log_tail():
                raise
            last_error = err
            continue
        return handle
    assert last_error is not None
    raise last_error


# ----------------------------------------------------------------------------- containerd


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


# -------------------------------------------------------------------------------- dockerd


class DockerDaemon:
    """A private dockerd (vfs, no bridge/iptables) with its own managed containerd."""

    def __init__(self, process: ManagedProcess, workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.docker_binary = require_binary("docker")
        self.client_config = workdir / "client-config"
        self.client_config.mkdir(exist_ok=True)
        self.startup_seconds = 0.0

    def docker(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://SOCKET ARGS...`` with a private client config dir.

        Run containers with ``--network none`` (there is no bridge).
        """
        return run_command(
            [self.docker_binary, "-H", self.host, *args],
            check=check,
            input=input,
            timeout=timeout,
            env=peer_env({"DOCKER_CONFIG": str(self.client_config)}),
        )

    def remove_all_images(self) -> None:
        """``docker load`` skips layers it already has: call this between negative tests."""
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", *containers)
        # Removing a child may already remove its untagged parents (images loaded through
        # the legacy path form chains), so remove one round at a time until none is left.
        for _ in range(10):
            images = self.docker("images", "-aq").stdout.split()
            if not images:
                return
            self.docker("rmi", "-f", *sorted(set(images)), check=False)
        raise PeerError(f"images left after removal: {self.docker('images', '-a').stdout}")

    def stop(self) -> None:
        self.process.stop()
        # dockerd stops its managed containerd on SIGTERM; after a SIGKILL it would not.
        _stop_strays(str(self.workdir))

    def __repr__(self) -> str:
        return f"<DockerDaemon {self.host} pid={self.process.pid}>"


def start_dockerd(workdir: Path, *, timeout: float = STARTUP_TIMEOUT) -> DockerDaemon:
    """Start dockerd as docs/peers.md says, everything it owns kept inside ``workdir``.

    ``--config-file`` isolates it from /etc/docker/daemon.json and moves the trust key
    (otherwise /etc/docker/key.json). dockerd still creates /run/docker/plugins (hard-coded).
    """
    binary = require_binary("dockerd")
    require_binary("runc")
    require_binary("containerd")
    workdir.mkdir(parents=True, exist_ok=True)
    sock = _check_socket_path(workdir / "docker.sock")
    exec_root = workdir / "exec"
    _check_socket_path(exec_root / "containerd" / "containerd.sock.ttrpc")
    daemon_json = workdir / "daemon.json"
    daemon_json.write_text(json.dumps({"deprecated-key-path": str(workdir / "key.json")}))
    argv: list[str | os.PathLike[str]] = [
        binary,
        "--config-file", daemon_json,
        "--data-root", workdir / "root",
        "--exec-root", exec_root,
        "--pidfile", workdir / "dockerd.pid",
        "-H", f"unix://{sock}",
        "--bridge", "none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--storage-driver", "vfs",
        "--containerd-namespace", "hatchway-dockerd",
        "--containerd-plugins-namespace", "hatchway-dockerd-plugins",
    ]  # fmt: skip
    proc = ManagedProcess("dockerd", argv, workdir / "log")
    handle = DockerDaemon(proc, workdir)
    try:
        handle.startup_seconds = wait_until_ready(
            proc,
            _unix_http_probe(sock, "/_ping", b"OK"),
            timeout=timeout,
            what=f"answer /_ping on {sock}",
        )
    except BaseException:
        handle.stop()
        raise
    return handle


# ------------------------------------------------------------------ skopeo, oci-image-tool


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


# ------------------------------------------------------------------------------- fixtures


_Service = TypeVar("_Service", Registry, Containerd, DockerDaemon)


def _service(
    factory: pytest.TempPathFactory, name: str, start: Callable[[Path], _Service]
) -> Iterator[_Service]:
    """Start a service in its own temp dir; stop it and remove the dir at session end."""
    workdir = factory.mktemp(name)
    handle = start(workdir)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_tree(workdir)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry on 127.0.0.1 (``.host``, ``.url``, ``.root``, ``.ref()``)."""
    yield from _service(tmp_path_factory, "registry", start_registry)


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd; ``containerd.ctr(...)`` uses namespace ``hatchwaytest``."""
    yield from _service(tmp_path_factory, "ctrd", start_containerd)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A private dockerd; ``dockerd.docker(...)`` runs the Debian docker CLI against it."""
    yield from _service(tmp_path_factory, "dockerd", start_dockerd)


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Skopeo]:
    """``skopeo(*args, check=True)`` with a private permissive policy file."""
    workdir = tmp_path_factory.mktemp("skopeo")
    try:
        yield Skopeo(workdir)
    finally:
        _remove_tree(workdir)


@pytest.fixture(scope="session")
def oci_image_tool() -> OciImageTool:
    """``oci_image_tool.validate(layout_dir)`` or ``oci_image_tool(*args)``."""
    return OciImageTool()
