"""The command line against a real registry: save docker:// names (mixed with local ones),
pull then save, credentials, and the loaders' view of a registry-sourced archive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hatchway.testing.layout import LayoutBuilder
from tests.peers import Containerd
from tests.registry_support import PASSWORD, USER, Lab, push_image
from tests.support import Family, read_archive
from tests.test_cli import error_line, run

pytestmark = pytest.mark.peers


def test_save_mixes_registry_and_local_names(lab: Lab, family: Family, tmp_path: Path) -> None:
    host = lab.registry.host
    out = tmp_path / "o.tar"
    result = run(
        "save",
        "--store",
        str(family.root),
        "-o",
        str(out),
        "app:1.0",
        f"docker://{host}/hw/docker:1",
    )
    assert result.returncode == 0, result.stderr
    tags = [e["RepoTags"] for e in read_archive(out.read_bytes()).json("manifest.json")]
    assert tags == [["app:1.0"], [f"{host}/hw/docker:1"]]


def test_pull_then_save_equals_save_from_the_registry(lab: Lab, tmp_path: Path) -> None:
    host = lab.registry.host
    store = tmp_path / "store"
    pulled = run("pull", "--store", str(store), f"docker://{host}/hw/oci:1")
    assert pulled.returncode == 0, pulled.stderr
    assert f"{host}/hw/oci:1" in pulled.stdout.decode()
    local = run("save", "--store", str(store), f"{host}/hw/oci:1")
    remote = run("save", "--store", str(tmp_path / "none"), f"docker://{host}/hw/oci:1")
    assert local.returncode == remote.returncode == 0, (local.stderr, remote.stderr)
    assert local.stdout == remote.stdout
    listed = run("images", "--store", str(store)).stdout.decode()
    assert f"{host}/hw/oci" in listed


def test_missing_registry_image_writes_nothing(lab: Lab, tmp_path: Path) -> None:
    name = f"docker://{lab.registry.host}/hw/nothing:here"
    result = run("save", "-o", str(tmp_path / "o.tar"), name)
    assert result.returncode == 1
    assert error_line(result) == f"hatchway: error: No such image: {name}"
    assert not (tmp_path / "o.tar").exists()


def test_credentials(lab: Lab, tmp_path: Path) -> None:
    name = f"docker://{lab.basic.host}/hw/docker:1"
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "none.json"), "DOCKER_CONFIG": str(tmp_path)}
    anonymous = run("save", "-o", str(tmp_path / "a.tar"), name, env=env)
    assert anonymous.returncode == 1
    assert "401" in error_line(anonymous) or "UNAUTHORIZED" in error_line(anonymous)
    wrong = run(
        "save", "--creds", f"{USER}:not-the-password", "-o", str(tmp_path / "w.tar"), name, env=env
    )
    assert wrong.returncode == 1
    assert "not-the-password" not in wrong.stderr.decode()
    assert not (tmp_path / "w.tar").exists()
    right = run(
        "save", "--creds", f"{USER}:{PASSWORD}", "-o", str(tmp_path / "r.tar"), name, env=env
    )
    assert right.returncode == 0, right.stderr
    assert PASSWORD not in right.stderr.decode()
    malformed = run("save", "--creds", "no-colon", name, env=env)
    assert malformed.returncode == 2
    assert "USER:PASSWORD" in malformed.stderr.decode()


def test_registry_archive_imports_into_containerd(
    lab: Lab, containerd: Containerd, tmp_path: Path
) -> None:
    host = lab.registry.host
    out = tmp_path / "o.tar"
    names = [
        f"docker://{host}/hw/docker:1",
        f"docker://{host}/hw/multi:1",
        f"docker://{host}/hw/family-c:1",
    ]
    assert run("save", "-o", str(out), *names).returncode == 0
    containerd.remove_all_images()
    containerd.ctr("images", "import", str(out))
    listed = containerd.image_names()
    for name in names:
        assert name.removeprefix("docker://") in listed


def test_two_pull_processes_into_one_store_keep_both_entries(lab: Lab, tmp_path: Path) -> None:
    """index.json is updated under an flock: separate processes do not lose each other's
    entries."""
    import json
    import subprocess

    from tests.test_cli import HATCHWAY

    host = lab.registry.host
    store = tmp_path / "store"
    names = ["hw/family-a:1", "hw/family-b:1", "hw/family-c:1", "hw/docker:1"]
    procs = [
        subprocess.Popen(
            [*HATCHWAY, "pull", "-q", "--store", str(store), f"{host}/{n}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in names
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    index = json.loads((store / "index.json").read_text())
    stored = sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"])
    assert stored == sorted(f"{host}/{n}" for n in names)


def _waiting_on_a_lock(pid: int, lock: Path) -> bool:
    """Whether ``pid`` has the lock file open: it is waiting for the lock (in steps that look
    for cancellation, so no kernel wait would show it), since the test holds it."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fds / name) == str(lock) for name in os.listdir(fds))
    except OSError:
        return False


def test_pull_rereads_index_json_under_the_lock(lab: Lab, tmp_path: Path) -> None:
    """While another process holds the store's lock, a pull waits for it, then re-reads
    index.json, so the other writer's entry survives."""
    import fcntl
    import json
    import os
    import subprocess
    import time

    from tests.test_cli import HATCHWAY

    host = lab.registry.host
    store = tmp_path / "store"
    assert run("pull", "-q", "--store", str(store), f"{host}/hw/docker:1").returncode == 0
    lock = os.open(store / "index.json.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [*HATCHWAY, "pull", "-q", "--store", str(store), f"{host}/hw/oci:1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not _waiting_on_a_lock(proc.pid, store / "index.json.lock"):
            assert proc.poll() is None, "pull finished without waiting for the lock"
            assert time.monotonic() < deadline, "pull never reached the lock"
            time.sleep(0.01)
        # Another writer replaces index.json blindly while holding the lock.
        index = json.loads((store / "index.json").read_text())
        index["manifests"].append(
            dict(index["manifests"][0], annotations={"io.containerd.image.name": "other/x:1"})
        )
        (store / "index.json").write_text(json.dumps(index))
    finally:
        os.close(lock)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    names = sorted(
        m["annotations"]["io.containerd.image.name"]
        for m in json.loads((store / "index.json").read_text())["manifests"]
    )
    assert names == sorted([f"{host}/hw/docker:1", f"{host}/hw/oci:1", "other/x:1"])


@pytest.mark.parametrize("order", ["local-first", "registry-first"])
def test_same_image_from_the_store_and_a_registry(lab: Lab, tmp_path: Path, order: str) -> None:
    """Item 8: one image ID, two sources whose blobs differ — the store keeps its layers
    gzip-compressed, the registry zstd-compressed (same config, same diffIDs, other blob
    digests).  Each manifest's layers come from the source that described it, so nothing is
    asked of a source that lacks it; the archive keeps both manifests as stored (each name's
    digest kept, in index.json), and Docker's manifest.json lists the image once, under both
    tags, with the layers of the name given first."""
    files = [{"etc/os-release": b"ID=two-sources\n"}, {"app/run": b"#!/bin/sh\necho hi\n"}]
    store = LayoutBuilder(tmp_path / "store")
    image = store.image([store.layer(f, compression="gzip") for f in files])
    store.tag(image, "app:1")
    store.save()
    pushed = LayoutBuilder(tmp_path / "push")
    remote = pushed.image([pushed.layer(f, compression="zstd") for f in files])
    assert remote.config_digest == image.config_digest and remote.digest != image.digest
    push_image(lab.registry.url, "hw/two-sources", "1", tmp_path / "push", remote)
    names = ["app:1", f"docker://{lab.registry.host}/hw/two-sources:1"]
    if order == "registry-first":
        names.reverse()
    saved = run("save", "--store", str(store.root), "-o", str(tmp_path / "o.tar"), *names)
    assert saved.returncode == 0, saved.stderr
    archive = read_archive((tmp_path / "o.tar").read_bytes())
    manifest = archive.json("manifest.json")
    assert len(manifest) == 1
    tags = ["app:1", f"{lab.registry.host}/hw/two-sources:1"]
    assert manifest[0]["RepoTags"] == (tags if order == "local-first" else tags[::-1])
    alone = {}
    for name in names:
        single = run("save", "--store", str(store.root), name)
        assert single.returncode == 0, single.stderr
        alone[name] = read_archive(single.stdout)
    first = alone[names[0]]
    for layer in manifest[0]["Layers"]:
        assert archive.data[layer] == first.data[layer]
    for name in names:  # every blob of each name, as its own source stores it
        for member, data in alone[name].data.items():
            if member.startswith("blobs/"):
                assert archive.data[member] == data, (name, member)
    digests = {e["digest"] for e in archive.json("index.json")["manifests"]}
    assert digests == {image.digest, remote.digest}
