"""``pull`` into the local OCI layout store: saving afterwards from the store gives the very
archive a save from the registry gives; ``index.json`` stays valid under concurrent pulls."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import anyio
import pytest

from hatchway import pull
from hatchway.errors import NoSuchImage
from hatchway.transports.layout.source import OCILayoutStore
from tests.bounded import assert_one_error_line, run_bounded
from tests.peers import OciImageTool
from tests.registry_support import Lab, options, save_archive, save_from_registry

pytestmark = [pytest.mark.anyio, pytest.mark.peers]

NAMES = ("hw/docker:1", "hw/oci:1", "hw/multi:1", "hw/family-a:1", "hw/family-c:1")


def _index(store: Path) -> list[dict[str, object]]:
    manifests: list[dict[str, object]] = json.loads((store / "index.json").read_text())["manifests"]
    return manifests


@pytest.mark.parametrize("archive_format", ["docker", "docker-1.10", "docker-legacy"])
async def test_save_after_pull_is_byte_identical_to_a_save_from_the_registry(
    lab: Lab, tmp_path: Path, archive_format: str
) -> None:
    registry_names = [lab.images.name(n) for n in NAMES]
    result = await pull(registry_names, store=tmp_path / "store", registry=options())
    assert [i.name for i in result.images] == [f"{lab.registry.host}/{n}" for n in NAMES]
    local_names = [f"{lab.registry.host}/{n}" for n in NAMES]
    local = await save_archive(
        local_names,
        tmp_path / "local.tar",
        OCILayoutStore(tmp_path / "store"),
        archive_format=archive_format,
    )
    remote = await save_from_registry(
        registry_names, tmp_path / "remote.tar", options(), archive_format=archive_format
    )
    assert local == remote


async def test_pull_writes_a_valid_layout_with_named_entries(
    lab: Lab, tmp_path: Path, oci_image_tool: OciImageTool
) -> None:
    store = tmp_path / "store"
    await pull(
        [lab.images.name("hw/oci:1"), lab.images.name("hw/multi:1")],
        store=store,
        registry=options(),
    )
    entries = _index(store)
    assert [e["annotations"] for e in entries] == [
        {
            "io.containerd.image.name": f"{lab.registry.host}/hw/oci:1",
            "org.opencontainers.image.ref.name": "1",
        },
        {
            "io.containerd.image.name": f"{lab.registry.host}/hw/multi:1",
            "org.opencontainers.image.ref.name": "1",
        },
    ]
    # The index is what is stored, as the registry has it (its digest kept), with the
    # platform manifest chosen from it.
    assert entries[1]["digest"] == lab.images.images["hw/multi:1"].digest
    native = lab.images.images["multi:native"].digest
    assert (store / "blobs" / "sha256" / native.removeprefix("sha256:")).exists()
    assert (store / "oci-layout").read_bytes() == b'{"imageLayoutVersion": "1.0.0"}'
    assert not [p for p in (store / "blobs" / "sha256").iterdir() if p.name.startswith(".")]
    # oci-image-tool 1.0.0-rc1 predates image indexes in a layout (it reads an index as a
    # manifest) and zstd layers: it validates a store of one image manifest of gzip layers.
    single = tmp_path / "single"
    await pull([lab.images.name("hw/family-a:1")], store=single, registry=options())
    oci_image_tool.validate(single, refs=["name=1"])


async def test_pulling_again_replaces_the_entry_of_the_same_name_and_fetches_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = await pull([lab.images.name("hw/family-a:1")], store=store, registry=options())
    assert first.blobs_fetched == 2
    again = await pull([lab.images.name("hw/family-a:1")], store=store, registry=options())
    assert again.blobs_fetched == 0 and again.bytes_fetched == 0
    assert len(_index(store)) == 1


async def test_a_damaged_cached_blob_is_fetched_again(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store"
    await pull([lab.images.name("hw/family-a:1")], store=store, registry=options())
    blobs = sorted((store / "blobs" / "sha256").iterdir(), key=lambda p: -p.stat().st_size)
    damaged = blobs[0]  # the largest blob: a layer
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    again = await pull([lab.images.name("hw/family-a:1")], store=store, registry=options())
    assert again.blobs_fetched == 1
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == damaged.name


async def test_pull_by_digest_records_no_tag(lab: Lab, tmp_path: Path) -> None:
    digest = lab.images.images["hw/oci:1"].digest
    name = f"{lab.registry.host}/hw/oci@{digest}"
    await pull([name], store=tmp_path / "store", registry=options())  # docker:// may be omitted
    [entry] = _index(tmp_path / "store")
    assert entry["annotations"] == {"io.containerd.image.name": name}


async def test_a_failed_pull_leaves_index_json_alone(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store"
    await pull([lab.images.name("hw/docker:1")], store=store, registry=options())
    before = (store / "index.json").read_bytes()
    with pytest.raises(NoSuchImage):
        await pull(
            [lab.images.name("hw/oci:1"), lab.images.name("hw/oci:missing")],
            store=store,
            registry=options(),
        )
    assert (store / "index.json").read_bytes() == before
    assert not [p for p in (store / "blobs" / "sha256").iterdir() if p.name.startswith(".")]


async def test_concurrent_pulls_keep_every_entry(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store"
    names = [lab.images.name(n) for n in NAMES]

    async def pull_one(name: str) -> None:
        await pull([name], store=store, registry=options())

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(pull_one, name)
    entries = _index(store)
    got = sorted(str(e["annotations"]["io.containerd.image.name"]) for e in entries)  # type: ignore[index]
    assert got == sorted(f"{lab.registry.host}/{n}" for n in NAMES)
    local = await save_archive(
        [f"{lab.registry.host}/{n}" for n in NAMES], tmp_path / "a.tar", OCILayoutStore(store)
    )
    assert local


async def test_pull_into_a_store_with_special_files_neither_hangs_nor_trusts_them(
    lab: Lab, tmp_path: Path
) -> None:
    """A FIFO where the destination keeps a blob is no intact blob: it is fetched again and
    replaced.  A FIFO as ``index.json`` is refused, with nothing added and nothing hung (run
    through the CLI under a deadline: a regression would block a worker thread for good)."""
    store = tmp_path / "store"
    name = lab.images.name("hw/docker:1")
    await pull([name], store=store, registry=options())
    blob = store / "blobs" / "sha256" / lab.images.layers["dock"].digest.removeprefix("sha256:")
    good = blob.read_bytes()
    blob.unlink()
    os.mkfifo(blob)
    env = {"DOCKER_CONFIG": str(tmp_path), "REGISTRY_AUTH_FILE": ""}
    again = run_bounded(["pull", "-q", "--store", str(store), name], env=env)
    assert again.returncode == 0, again.stderr
    assert blob.read_bytes() == good
    (store / "index.json").unlink()
    os.mkfifo(store / "index.json")
    refused = run_bounded(["pull", "-q", "--store", str(store), name], env=env)
    assert "index.json: is a FIFO, not a regular file" in assert_one_error_line(refused)
    assert stat.S_ISFIFO((store / "index.json").lstat().st_mode)
