"""The bundle server example (docs/examples/bundle_server.py), end to end: a real server
process under hypercorn with trio and under uvicorn with asyncio, real clients."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import hatchway
from hatchway.testing import LayoutBuilder, layer_tar
from tests.peers import DockerDaemon, free_port
from tests.peers.process import ManagedProcess, wait_until_ready
from tests.support import Family, build_family, read_archive

ROOT = Path(__file__).parent.parent
#: The servers' HATCHWAY_SEND_TIMEOUT: a client that takes no byte for this long is dropped.
SEND_TIMEOUT = 5
SERVERS = {
    "hypercorn-trio": ["-m", "hypercorn", "--worker-class", "trio", "--bind", "127.0.0.1:{port}"],
    "uvicorn-asyncio": ["-m", "uvicorn", "--loop", "asyncio", "--port", "{port}"],
}


class Server:
    def __init__(self, kind: str, store: Path, tmpdir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmpdir = tmpdir
        args = [a.format(port=self.port) for a in SERVERS[kind]]
        env = dict(os.environ, HATCHWAY_STORE=str(store), HATCHWAY_TMPDIR=str(tmpdir))
        env["HATCHWAY_MAX_SAVES"] = "2"
        env["HATCHWAY_SEND_TIMEOUT"] = str(SEND_TIMEOUT)
        self.process = ManagedProcess(
            kind,
            [sys.executable, *args, "docs.examples.bundle_server:app"],
            log,
            env=env,
            cwd=ROOT,
        )
        wait_until_ready(self.process, self._healthy, what="serve /healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.tmpdir.iterdir())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Family:
    """The test family, plus ``big:1``: 48 MiB, far more than socket buffers hold, so a
    client hanging up early does so while the server is still writing."""
    work = tmp_path_factory.mktemp("server")
    family = build_family(work / "store")
    tar = work / "big.tar"
    tar.write_bytes(layer_tar({"big/blob": random.Random(7).randbytes(48 << 20)}))
    b = LayoutBuilder(family.root)
    b.entries = json.loads((family.root / "index.json").read_text())["manifests"]
    b.tag(b.image([b.layer_from_file(tar)]), "big:1")
    b.save()
    return family


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(
    request: pytest.FixtureRequest, store: Family, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp(request.param)
    (work / "tmp").mkdir()
    running = Server(request.param, store.root, work / "tmp", work / "server.log")
    try:
        yield running
    finally:
        running.process.stop()


def _expected(store: Family, names: list[str], tmp_path: Path) -> bytes:
    out = tmp_path / "expected.tar"
    anyio.run(lambda: hatchway.save(names, out, store=store.root))
    return out.read_bytes()


def test_a_bundle_is_the_archive_a_save_writes(
    server: Server, store: Family, tmp_path: Path
) -> None:
    names = ["app", "tools:latest"]
    response = httpx.get(f"{server.url}/bundle", params={"image": names}, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-tar"
    assert response.content == _expected(store, names, tmp_path)
    assert server.leftovers() == []


def test_an_unknown_name_is_a_json_404_before_any_archive_byte(server: Server) -> None:
    response = httpx.get(f"{server.url}/bundle", params={"image": ["app", "nope:1"]}, timeout=30)
    assert response.status_code == 404
    assert response.json() == {"error": "No such image: nope:1", "kind": "NoSuchImage"}
    bad = httpx.get(f"{server.url}/bundle", params={"image": "Bad Name"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["kind"] == "InvalidReference"
    none = httpx.get(f"{server.url}/bundle", timeout=30)
    assert none.status_code == 400
    assert server.leftovers() == []


def test_two_concurrent_requests_for_overlapping_images(
    server: Server, store: Family, tmp_path: Path
) -> None:
    first, second = ["app", "tools"], ["tools", "127.0.0.1:5000/other:v1"]
    bodies: dict[str, bytes] = {}

    async def fetch(label: str, names: list[str]) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{server.url}/bundle", params={"image": names})
            assert response.status_code == 200
            bodies[label] = response.content

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch, "first", first)
            tg.start_soon(fetch, "second", second)

    anyio.run(both)
    assert bodies["first"] == _expected(store, first, tmp_path)
    assert bodies["second"] == _expected(store, second, tmp_path)


def test_a_client_that_disconnects_mid_stream_leaves_nothing_behind(
    server: Server, tmp_path: Path
) -> None:
    before = httpx.get(f"{server.url}/healthz", timeout=5).json()["cancelled"]
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{server.url}/bundle", params={"image": "big:1"}) as r,
    ):
        assert r.status_code == 200
        next(r.iter_raw(1024))  # the archive started; hang up now
    for _ in range(200):  # the server notices the hang-up, cancels the save, cleans up
        health = httpx.get(f"{server.url}/healthz", timeout=5).json()
        if health["saves"] == 0 and server.leftovers() == []:
            break
        time.sleep(0.05)
    assert health == {"ok": True, "saves": 0, "cancelled": before + 1}
    assert server.leftovers() == []


def test_a_client_that_stops_reading_gives_its_save_slot_back(server: Server) -> None:
    """A client that neither reads nor hangs up would hold one of the server's few save slots
    for ever; after the send timeout its response ends and its save is cancelled."""
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", f"{server.url}/bundle", params={"image": "big:1"}) as r,
    ):
        assert r.status_code == 200
        unread = r.iter_raw(1024)  # kept: a dropped iterator would close the connection
        next(unread)  # then nothing more: the connection stays open, unread
        assert httpx.get(f"{server.url}/healthz", timeout=5).json()["saves"] == 1
        deadline = time.monotonic() + SEND_TIMEOUT + 30
        while time.monotonic() < deadline:
            health = httpx.get(f"{server.url}/healthz", timeout=5).json()
            if health["saves"] == 0 and server.leftovers() == []:
                break
            time.sleep(0.2)
        assert health["saves"] == 0
    assert server.leftovers() == []


@pytest.mark.parametrize(
    "name",
    ["docker-archive:/etc/passwd", "oci-archive:/etc/passwd", "oci:/", "docker://127.0.0.1:1/x:1"],
)
def test_names_of_files_or_of_other_registries_are_refused(server: Server, name: str) -> None:
    """A web client names images, not the server's files (an archive transport would read,
    or probe, any path the server can), nor registries the operator did not allow."""
    response = httpx.get(f"{server.url}/bundle", params={"image": ["app", name]}, timeout=30)
    assert response.status_code == 403
    assert response.json()["kind"] == "Refused"
    assert (
        "/etc/passwd" not in response.json()["error"] or "names a file" in response.json()["error"]
    )
    assert server.leftovers() == []


@pytest.mark.peers
def test_curl_into_docker_load(server: Server, dockerd: DockerDaemon) -> None:
    """Images whose layers are gzip: the bundle keeps them as stored, which Docker 20.10
    loads (it has no zstd, which app:1.0 has a layer of)."""
    dockerd.remove_all_images()
    curl = subprocess.Popen(
        ["curl", "-sf", f"{server.url}/bundle?image=tools&image=busybox"],
        stdout=subprocess.PIPE,
    )
    assert curl.stdout is not None
    loaded = subprocess.run(
        [dockerd.docker_binary, "-H", dockerd.host, "load"],
        stdin=curl.stdout,
        capture_output=True,
        text=True,
        env=dict(os.environ, DOCKER_CONFIG=str(dockerd.client_config)),
        timeout=120,
    )
    curl.stdout.close()
    assert curl.wait(timeout=30) == 0
    assert loaded.returncode == 0, loaded.stderr
    assert "Loaded image: tools:latest" in loaded.stdout
    assert "Loaded image: busybox:latest" in loaded.stdout
    names = dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert {"tools:latest", "busybox:latest"} <= set(names)


def test_archives_read_back(server: Server) -> None:
    response = httpx.get(f"{server.url}/bundle", params={"image": "app:2.0"}, timeout=30)
    manifest = read_archive(response.content).json("manifest.json")
    assert manifest[0]["RepoTags"] == ["app:2.0"]


def test_a_zstd_bundle_streamed_into_hatchway_verify(server: Server, tmp_path: Path) -> None:
    """An httpx stream of ``?compress=zstd`` piped into ``hatchway verify -``: the bundle that
    crossed the wire checks out, layer by layer."""
    params = {"image": ["app", "tools"], "compress": "zstd"}
    with subprocess.Popen(
        [sys.executable, "-m", "hatchway", "verify", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as verify:
        assert verify.stdin is not None and verify.stdout is not None
        assert verify.stderr is not None
        try:
            with httpx.stream("GET", f"{server.url}/bundle", params=params, timeout=30) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "application/zstd"
                for chunk in response.iter_raw():
                    verify.stdin.write(chunk)
            verify.stdin.close()
            out, err = verify.stdout.read(), verify.stderr.read()
            assert verify.wait(timeout=60) == 0, err
        finally:
            verify.kill()
    assert b"image" in out
    bad = httpx.get(f"{server.url}/bundle", params={"image": "app", "compress": "xz"}, timeout=30)
    assert bad.status_code == 400
