"""Smoke tests: every peer fixture in tests/peers/ starts, answers and does real work."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

from tests.peers import (
    Containerd,
    DockerDaemon,
    ManagedProcess,
    OciImageTool,
    PeerCommandError,
    PeerError,
    Registry,
    Skopeo,
    free_port,
    require_binary,
    static_busybox,
    stop_pid,
    wait_until_ready,
)

pytestmark = pytest.mark.peers

REPO_TAG = "hatchway-smoke/busybox:1"
HELLO = b"hello from hatchway\n"


def _tar_entry(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.linkname = linkname
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def build_busybox_archive(path: Path, repo_tag: str = REPO_TAG) -> dict[str, str]:
    """Write a docker-1.10-style archive (manifest.json, config, one layer) that really runs.

    The layer holds Debian's static /bin/busybox, bin/cat and bin/sh symlinks and etc/hello.
    Returns the digests (hex) of the layer (= diff_id) and the config.
    """
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.USTAR_FORMAT) as layer:
        _tar_entry(layer, "bin", kind=tarfile.DIRTYPE, mode=0o755)
        _tar_entry(layer, "bin/busybox", data=static_busybox().read_bytes(), mode=0o755)
        _tar_entry(layer, "bin/cat", kind=tarfile.SYMTYPE, mode=0o777, linkname="busybox")
        _tar_entry(layer, "bin/sh", kind=tarfile.SYMTYPE, mode=0o777, linkname="busybox")
        _tar_entry(layer, "etc", kind=tarfile.DIRTYPE, mode=0o755)
        _tar_entry(layer, "etc/hello", data=HELLO)
    layer_bytes = layer_buf.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hatchway smoke"}],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [
            {
                "Config": f"{config_id}.json",
                "RepoTags": [repo_tag],
                "Layers": [f"{diff_id}/layer.tar"],
            }
        ]
    ).encode()
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        _tar_entry(archive, f"{diff_id}/", kind=tarfile.DIRTYPE, mode=0o755)
        _tar_entry(archive, f"{diff_id}/layer.tar", data=layer_bytes)
        _tar_entry(archive, f"{config_id}.json", data=config)
        _tar_entry(archive, "manifest.json", data=manifest)
    return {"diff_id": diff_id, "config": config_id}


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "busybox.tar"
    build_busybox_archive(path)
    return path


# ------------------------------------------------------------------------- helper checks


def test_free_port_is_bindable_on_loopback() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_missing_binary_fails_naming_the_package() -> None:
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y no-such-pkg"):
        require_binary("hatchway-no-such-binary", package="no-such-pkg")


def test_wait_until_ready_reports_early_exit_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "early-exit",
        [sys.executable, "-c", "print('boom: cannot bind'); raise SystemExit(3)"],
        tmp_path / "log",
    )
    try:
        with pytest.raises(PeerError, match=r"(?s)exited with code 3.*boom: cannot bind"):
            wait_until_ready(proc, lambda: False, timeout=10)
    finally:
        proc.stop()


def test_wait_until_ready_times_out_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "sleeper",
        [sys.executable, "-c", "import time; print('still starting', flush=True); time.sleep(60)"],
        tmp_path / "log",
    )
    try:
        with pytest.raises(PeerError, match=r"(?s)did not answer within 0.3 s.*still starting"):
            wait_until_ready(proc, lambda: False, timeout=0.3)
    finally:
        proc.stop()
    assert proc.popen.returncode is not None


def test_stop_pid_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = ManagedProcess(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ignoring', flush=True)\n"
            "time.sleep(60)\n",
        ],
        log,
    )
    wait_until_ready(proc, lambda: "ignoring" in log.read_text(), timeout=10)
    assert stop_pid(proc.pid, timeout=0.3) is True
    proc.stop()
    assert proc.popen.returncode is not None


def test_busybox_is_static() -> None:
    assert static_busybox().is_file()


# ------------------------------------------------------------------------------ services


def test_registry_answers_and_deletes(
    registry: Registry, skopeo: Skopeo, busybox_archive: Path
) -> None:
    assert registry.host.startswith("127.0.0.1:")
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as response:
        assert response.status == 200
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        f"docker-archive:{busybox_archive}",
        registry.ref("smoke/busybox", "v1"),
    )
    inspected = skopeo.inspect(registry.ref("smoke/busybox", "v1"), "--tls-verify=false")
    assert inspected["Name"] == f"{registry.host}/smoke/busybox"
    assert any(registry.root.rglob("data"))  # blobs landed in our storage dir

    request = urllib.request.Request(
        f"{registry.url}/v2/smoke/busybox/manifests/v1",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        digest = response.headers["Docker-Content-Digest"]
    delete = urllib.request.Request(
        f"{registry.url}/v2/smoke/busybox/manifests/{digest}", method="DELETE"
    )
    with urllib.request.urlopen(delete, timeout=5) as response:
        assert response.status == 202


def test_skopeo_verifies_archive_and_oci_image_tool_validates(
    skopeo: Skopeo, oci_image_tool: OciImageTool, busybox_archive: Path, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    skopeo("copy", f"docker-archive:{busybox_archive}", f"oci:{layout}:v1")
    oci_image_tool.validate(layout)
    oci_image_tool.validate(layout, refs=["name=v1"])

    broken = tmp_path / "broken"
    skopeo("copy", f"docker-archive:{busybox_archive}", f"oci:{broken}:v1")
    blob = max((broken / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    with blob.open("ab") as fh:
        fh.write(b"garbage")
    with pytest.raises(PeerCommandError, match="size mismatch"):
        oci_image_tool.validate(broken)


def test_skopeo_rejects_wrong_diff_id(skopeo: Skopeo, tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    build_busybox_archive(archive)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    config_name = next(n for n in members if n.endswith(".json") and n != "manifest.json")
    config = json.loads(members[config_name])
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    members[config_name] = json.dumps(config).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = skopeo("copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'out'}:v1", check=False)
    assert result.returncode != 0


def test_containerd_imports_archive(containerd: Containerd, busybox_archive: Path) -> None:
    assert containerd.socket.is_socket()
    containerd.ctr("images", "import", busybox_archive)
    assert f"docker.io/{REPO_TAG}" in containerd.image_names()
    check = containerd.ctr("images", "check")
    assert "complete" in check.stdout
    containerd.remove_all_images()
    assert containerd.image_names() == []


def test_containerd_rejects_garbage(containerd: Containerd, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar archive" * 100)
    assert containerd.ctr("images", "import", garbage, check=False).returncode != 0


def test_dockerd_loads_and_runs(dockerd: DockerDaemon, busybox_archive: Path) -> None:
    assert dockerd.host.startswith("unix://")
    proxy = dockerd.docker("info", "--format", "{{.HTTPSProxy}}").stdout.strip()
    assert proxy == "http://127.0.0.1:9"  # accidental pulls from public registries fail locally
    loaded = dockerd.docker("load", "-i", busybox_archive)
    assert f"Loaded image: {REPO_TAG}" in loaded.stdout
    run = dockerd.docker("run", "--rm", "--network", "none", REPO_TAG, "cat", "/etc/hello")
    assert run.stdout.encode() == HELLO
    dockerd.remove_all_images()
    assert dockerd.docker("images", "-q").stdout.strip() == ""


def test_dockerd_load_from_stdin(dockerd: DockerDaemon, busybox_archive: Path) -> None:
    loaded = dockerd.docker("load", input=busybox_archive.read_bytes())
    assert f"Loaded image: {REPO_TAG}" in loaded.stdout
    dockerd.remove_all_images()


def test_peers_report_startup_times(
    registry: Registry, containerd: Containerd, dockerd: DockerDaemon
) -> None:
    for name, seconds in [
        ("registry", registry.startup_seconds),
        ("containerd", containerd.startup_seconds),
        ("dockerd", dockerd.startup_seconds),
    ]:
        print(f"{name} ready in {seconds:.3f} s")
        assert 0 < seconds < 30
