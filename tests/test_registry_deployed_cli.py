"""The command line against registries as deployed: TLS with --ca-cert and certs.d, mutual
TLS with --client-cert/--client-key, mirrors from --registries-conf (and where the containers
tools look for it), and the one-line errors when trust or a connection fails."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import free_port, start_registry
from tests.registry_support import Lab, push_image
from tests.support import read_archive
from tests.test_cli import error_line, run
from tests.tls_support import TlsLab

pytestmark = pytest.mark.peers


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A private HOME (no certs.d, no registries.conf, no credentials of the machine's user)."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "DOCKER_CONFIG": str(home), **extra}


def _saved_tags(path: Path) -> list[list[str]]:
    return [e["RepoTags"] for e in read_archive(path.read_bytes()).json("manifest.json")]


def _save(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return run("save", "-q", "-o", str(tmp_path / "o.tar"), *args, env=_env(tmp_path / "h", **env))


def test_help_teaches_the_trust_and_mirror_options() -> None:
    text = run("save", "--help").stdout.decode()
    for flag in ("--ca-cert", "--client-cert", "--client-key", "--registries-conf"):
        assert flag in text
    assert "certs.d" in text and "registries.conf" in text
    assert "--registries-conf" in run("pull", "--help").stdout.decode()


def test_ca_cert_opens_a_tls_registry_on_localhost(tls_lab: TlsLab, tmp_path: Path) -> None:
    name = f"localhost:{tls_lab.tls.port}/hw/docker:1"
    result = _save(tmp_path, "--ca-cert", str(tls_lab.pki.ca), f"docker://{name}")
    assert result.returncode == 0, result.stderr
    assert _saved_tags(tmp_path / "o.tar") == [[name]]


def test_a_certs_d_directory_under_home_is_followed(tls_lab: TlsLab, tmp_path: Path) -> None:
    host = tls_lab.tls.host
    certs = tmp_path / "h" / ".config" / "containers" / "certs.d" / host
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_bytes(tls_lab.pki.ca.read_bytes())
    result = _save(tmp_path, f"docker://{host}/hw/oci:1")
    assert result.returncode == 0, result.stderr


def test_an_untrusted_registry_is_one_line_at_once(tls_lab: TlsLab, tmp_path: Path) -> None:
    host = tls_lab.tls.host
    started = time.monotonic()
    result = _save(tmp_path, f"docker://{host}/hw/docker:1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(f"hatchway: error: registry {host}, repository hw/docker: ")
    assert "TLS certificate not trusted: certificate signed by an unknown authority" in line
    assert "--ca-cert FILE" in line and f"/etc/docker/certs.d/{host}/" in line
    assert not (tmp_path / "o.tar").exists()
    assert elapsed < 2.0  # five retries with backoff would take over 3 s


def test_client_certificates(tls_lab: TlsLab, tmp_path: Path) -> None:
    name = f"docker://{tls_lab.mtls.host}/hw/docker:1"
    ca = ("--ca-cert", str(tls_lab.pki.ca))
    pair = tls_lab.pki.client("cli")
    missing = _save(tmp_path, *ca, name)
    assert missing.returncode == 1
    assert "demands a client certificate" in error_line(missing)
    alone = _save(tmp_path, *ca, "--client-cert", str(pair.cert), name)
    assert alone.returncode == 2
    assert "--client-cert and --client-key go together" in alone.stderr.decode()
    both = _save(
        tmp_path, *ca, "--client-cert", str(pair.cert), "--client-key", str(pair.key), name
    )
    assert both.returncode == 0, both.stderr
    assert _saved_tags(tmp_path / "o.tar") == [[name.removeprefix("docker://")]]


def test_a_refused_connection_is_one_line_at_once(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _save(tmp_path, f"docker://{host}/app:1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert error_line(result) == (
        f"hatchway: error: registry {host}, repository app: manifest 1: "
        "cannot connect: connection refused (is the registry running?)"
    )
    assert elapsed < 2.0


@pytest.fixture(scope="module")
def hub_mirror(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback registry holding an image as library/busybox:latest."""
    mirror = start_registry(tmp_path_factory.mktemp("cli-hub-mirror"))
    image = lab.images.images["hw/oci:1"]
    push_image(mirror.url, "library/busybox", "latest", lab.images.layout, image)
    try:
        yield mirror.host
    finally:
        mirror.stop()


def _mirror_conf(path: Path, mirror: str, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[[registry]]\nlocation = "docker.io"\n{extra}[[registry.mirror]]\n'
        f'location = "127.0.0.1:{free_port()}"\n[[registry.mirror]]\nlocation = "{mirror}"\n'
    )
    return path


def test_registries_conf_mirrors_from_the_flag_the_environment_and_home(
    hub_mirror: str, tmp_path: Path
) -> None:
    conf = _mirror_conf(tmp_path / "flag.conf", hub_mirror)
    result = _save(tmp_path, "--registries-conf", str(conf), "docker://busybox")
    assert result.returncode == 0, result.stderr
    assert _saved_tags(tmp_path / "o.tar") == [["busybox:latest"]]
    (tmp_path / "o.tar").unlink()
    env_conf = _mirror_conf(tmp_path / "env.conf", hub_mirror)
    result = _save(tmp_path, "docker://busybox", CONTAINERS_REGISTRIES_CONF=str(env_conf))
    assert result.returncode == 0, result.stderr
    (tmp_path / "o.tar").unlink()
    _mirror_conf(tmp_path / "h" / ".config" / "containers" / "registries.conf", hub_mirror)
    result = _save(tmp_path, "docker://busybox")
    assert result.returncode == 0, result.stderr
    pulled = run(
        "pull", "-q", "--store", str(tmp_path / "store"), "busybox", env=_env(tmp_path / "h")
    )
    assert pulled.returncode == 0, pulled.stderr


def test_registries_conf_errors_are_one_line(hub_mirror: str, tmp_path: Path) -> None:
    blocked = _mirror_conf(tmp_path / "blocked.conf", hub_mirror, extra="blocked = true\n")
    result = _save(tmp_path, "--registries-conf", str(blocked), "docker://busybox")
    assert result.returncode == 1
    assert error_line(result) == (
        "hatchway: error: registry docker.io, repository library/busybox: "
        f"docker.io/library/busybox:latest is blocked by {blocked} (prefix 'docker.io')"
    )
    broken = tmp_path / "broken.conf"
    broken.write_text('[[registry]]\nlocation = "http://mirror.corp"\n')
    result = _save(tmp_path, "--registries-conf", str(broken), "docker://busybox")
    assert result.returncode == 1
    assert error_line(result) == (
        f"hatchway: error: {broken}: [[registry]] 'http://mirror.corp': 'http://mirror.corp': "
        "no scheme allowed (HOST[:PORT][/PATH])"
    )
    missing = _save(tmp_path, "docker://busybox", CONTAINERS_REGISTRIES_CONF="/nonexistent.conf")
    assert missing.returncode == 1
    assert error_line(missing) == "hatchway: error: /nonexistent.conf: no such file"
    assert not (tmp_path / "o.tar").exists()
