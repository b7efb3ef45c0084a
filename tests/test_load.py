"""``hatchway load``: archives into the local store, then saved again unchanged."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import anyio
import pytest

import hatchway
from tests.archive_support import (
    NAMES,
    first_layer,
    flip_byte,
    members,
    rewrite,
    save,
    save_sync,
)
from tests.support import Family, files_under
from tests.test_cli import HATCHWAY, error_line, run

pytestmark = pytest.mark.anyio


def index_of(store: Path) -> list[dict[str, object]]:
    return list(json.loads((store / "index.json").read_bytes())["manifests"])


def blobs(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "blobs" / "sha256").iterdir())


@pytest.mark.parametrize("fmt", ["docker", "docker-1.10"])
@pytest.mark.parametrize("suffix", [".tar", ".tar.zst", ".tar.gz"])
async def test_load_then_save_gives_the_same_archive(
    family: Family, tmp_path: Path, fmt: str, suffix: str
) -> None:
    bundle = await save(family, tmp_path / f"bundle{suffix}", format=fmt)
    store = tmp_path / "loaded"
    result = await hatchway.load([bundle], store=store)
    names = sorted(i.name or "" for i in result.images)
    assert names == sorted(
        [
            "docker.io/library/app:1.0",
            "docker.io/library/app:2.0",
            "docker.io/library/app:latest",
            "docker.io/library/tools:latest",
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/other:v1",
        ]
    )
    again = tmp_path / "again.tar"
    await hatchway.save(NAMES, again, store=store, format=fmt)
    original = await save(family, tmp_path / "plain.tar", format=fmt)
    assert again.read_bytes() == original.read_bytes()
    rows = await hatchway.list_images(store)
    assert all(r.error is None for r in rows)
    assert {r.name.recorded_tag() for r in rows if r.name} >= {"app:1.0", "busybox:latest"}


async def test_every_blob_once_and_loading_again_changes_nothing(
    family: Family, tmp_path: Path
) -> None:
    one = await save(family, tmp_path / "one.tar.zst", ["app:1.0", "tools"])
    two = await save(family, tmp_path / "two.tar", ["app:2.0", "127.0.0.1:5000/other:v1"])
    store = tmp_path / "s"
    first = await hatchway.load([one, two], store=store)
    # layers base, l1, l2, l3, l4 — each stored once though shared between the bundles
    assert first.blobs_stored == 5
    held = blobs(store)
    index = (store / "index.json").read_bytes()
    second = await hatchway.load([two, one], store=store)
    assert second.blobs_stored == 0
    assert blobs(store) == held
    assert sorted(map(str, index_of(store))) == sorted(map(str, json.loads(index)["manifests"]))


async def test_untagged_images_are_stored_by_id_once(family: Family, tmp_path: Path) -> None:
    tools = family.images["tools"].config_digest
    bundle = await save(family, tmp_path / "b.tar", [tools, "app:1.0"])
    store = tmp_path / "s"
    for _ in range(2):
        result = await hatchway.load([bundle], store=store)
    assert [i.name for i in result.images] == [None, "docker.io/library/app:1.0"]
    assert len(index_of(store)) == 2
    rows = await hatchway.list_images(store)
    assert [r.name for r in rows if r.image and r.image.id == tools] == [None]
    out = tmp_path / "o.tar"
    await hatchway.save([tools], out, store=store)
    assert [e["RepoTags"] for e in json.loads(members(out)["manifest.json"])] == [None]
    # Naming it later replaces the unnamed entry.
    await hatchway.load([await save(family, tmp_path / "t.tar", ["tools"])], store=store)
    assert len([e for e in index_of(store) if not e.get("annotations")]) == 0


async def test_one_image_by_ref(family: Family, tmp_path: Path) -> None:
    bundle = await save(family, tmp_path / "b.tar", NAMES)
    store = tmp_path / "s"
    result = await hatchway.load([f"docker-archive:{bundle}:busybox"], store=store)
    assert [i.name for i in result.images] == ["docker.io/library/busybox:latest"]
    oci = await hatchway.load([f"oci-archive:{bundle}:@1"], store=tmp_path / "t")
    assert [i.id for i in oci.images] == [family.images["app2"].config_digest]


def test_bad_archives_leave_the_store_unchanged(family: Family, tmp_path: Path) -> None:
    good = save_sync(family, tmp_path / "good.tar", ["app:1.0"])
    store = tmp_path / "store-loaded"
    assert run("load", "-q", "--store", str(store), str(good)).returncode == 0
    before = {p: (store / p).read_bytes() for p in files_under(store) if (store / p).is_file()}
    (tmp_path / "text").write_text("not a tar\n" * 100)
    unsafe = rewrite(good, tmp_path / "unsafe.tar", extra=[("../../evil", b"x")])
    cases = {
        str(tmp_path / "text"): "not a tar archive",
        str(unsafe): "unsafe name",
        str(tmp_path / "missing.tar"): "no such file",
        f"docker-archive:{good}:nope:1": "No such image",
    }
    for archive, message in cases.items():
        result = run("load", "--store", str(store), str(good), archive)
        assert result.returncode == 1, archive
        assert message in error_line(result), archive
        after = {p: (store / p).read_bytes() for p in files_under(store) if (store / p).is_file()}
        assert after == before, archive
    fresh = tmp_path / "never-made"
    assert run("load", "--store", str(fresh), str(unsafe)).returncode == 1
    assert not fresh.exists()


def assert_valid_and_empty(store: Path) -> None:
    """``store`` lists no image, as ``hatchway images`` and ``save`` read it, and holds no
    temp file: what a load that failed or was stopped may leave of a store it created."""
    result = run("images", "--json", "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [] and result.stderr == b""
    assert [p for p in files_under(store) if "hatchway-tmp" in p] == []


def test_a_failed_load_into_a_new_store_leaves_a_valid_store(
    family: Family, tmp_path: Path
) -> None:
    """A digest mismatch is found while the layers are stored: the new store then held
    ``oci-layout`` and blobs but no ``index.json``, which ``images`` and ``save`` refused as
    "not an OCI image layout".  The layout is now complete before any blob is written."""
    good = save_sync(family, tmp_path / "good.tar", ["app:2.0"])
    bad = rewrite(good, tmp_path / "bad.tar", flip_byte(first_layer(good)))
    store = tmp_path / "new" / "store"
    result = run("load", "--store", str(store), str(bad))
    assert result.returncode == 1
    assert "digest mismatch" in error_line(result)
    assert_valid_and_empty(store)
    assert run("load", "-q", "--store", str(store), str(good)).returncode == 0
    listed = run("images", "--store", str(store)).stdout.decode().splitlines()
    assert [row.split()[:2] for row in listed[1:]] == [["app", "2.0"]]


async def test_concurrent_loads_into_one_new_store_keep_every_entry(
    family: Family, tmp_path: Path
) -> None:
    """Each load makes the new store's layout, an empty ``index.json`` included, under the
    lock its entries are added with: none of them may replace another's entries."""
    names = ["app:1.0", "app:2.0", "tools", "busybox"]
    bundles = [await save(family, tmp_path / f"{i}.tar", [n]) for i, n in enumerate(names)]
    store = tmp_path / "new" / "store"
    async with anyio.create_task_group() as tg:
        for bundle in bundles:
            tg.start_soon(functools.partial(hatchway.load, [bundle], store=store))
    rows = await hatchway.list_images(store)
    assert all(r.error is None for r in rows)
    assert sorted(r.name.recorded_tag() for r in rows if r.name) == [
        "app:1.0",
        "app:2.0",
        "busybox:latest",
        "tools:latest",
    ]


#: ``hatchway load`` stopped by Ctrl-C while its first layer is written into the store.
STOP_MID_LAYER = """
import os, signal, sys
import anyio
import _hatchway_cli
from hatchway.transports.layout.destination import BlobFile

async def commit(self, size):
    os.kill(os.getpid(), signal.SIGINT)
    await anyio.sleep(60)  # cancelled by the signal: the layer is never committed

BlobFile.commit = commit
sys.argv = ["hatchway", *sys.argv[1:]]
_hatchway_cli.main()
"""


def test_ctrl_c_mid_load_into_a_new_store_leaves_a_valid_store(
    family: Family, tmp_path: Path
) -> None:
    bundle = save_sync(family, tmp_path / "b.tar", ["app:2.0"])
    store = tmp_path / "new"
    result = subprocess.run(
        [sys.executable, "-c", STOP_MID_LAYER, "load", "--store", str(store), str(bundle)],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.decode().splitlines() == ["hatchway: interrupted"]
    assert_valid_and_empty(store)


_ZERO = "sha256:" + "0" * 64

#: index.json documents whose entries are not descriptors the store's reader accepts.
ODD_INDEXES: dict[str, object] = {
    "list-digest": {"schemaVersion": 2, "manifests": [{"digest": ["x"]}]},
    "object-digest": {"schemaVersion": 2, "manifests": [{"digest": {"a": 1}, "annotations": {}}]},
    "number-image-name": {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "x",
                "digest": _ZERO,
                "size": 1,
                "annotations": {"io.containerd.image.name": 5},
            }
        ],
    },
    "number-ref-name": {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "x",
                "digest": _ZERO,
                "size": 1,
                "annotations": {"org.opencontainers.image.ref.name": 5},
            }
        ],
    },
    "entry-not-an-object": {"schemaVersion": 2, "manifests": [3]},
}


@pytest.mark.parametrize("case", sorted(ODD_INDEXES))
def test_odd_index_entries_are_one_error_line_and_left_alone(
    family: Family, tmp_path: Path, case: str
) -> None:
    """An index.json entry that is not a descriptor (a list as its digest, a number as its
    name) failed the load as an "internal error"; it is malformed, and left as it is.  The
    store's reader refuses the same file with one line too."""
    bundle = save_sync(family, tmp_path / "b.tar", ["app:1.0"])
    store = tmp_path / "s"
    assert run("load", "-q", "--store", str(store), str(bundle)).returncode == 0
    odd = json.dumps(ODD_INDEXES[case]).encode()
    (store / "index.json").write_bytes(odd)
    result = run("load", "--store", str(store), str(bundle))
    assert result.returncode == 1
    assert error_line(result) == (
        f"hatchway: error: store {store}: index.json is malformed; not overwriting it"
    )
    assert (store / "index.json").read_bytes() == odd
    out = tmp_path / "o.tar"
    for args in (["images"], ["save", "-o", str(out), "app:1.0"]):
        result = run(*args, "--store", str(store))
        assert result.returncode == 1, args
        assert error_line(result).startswith(f"hatchway: error: store {store}: index.json entry")
    assert not out.exists()


async def test_load_refuses_what_verify_refuses(family: Family, tmp_path: Path) -> None:
    """``load`` is no looser than ``verify``: a tar cut exactly between two members (it
    parses, but lacks its end-of-archive blocks) and a ``manifest.json`` of ``[]`` loaded
    with success, the second loading nothing; ``verify`` refused the first only."""
    good = await save(family, tmp_path / "good.tar", ["tools"], format="docker-1.10")
    with tarfile.open(good) as tar:
        last = tar.getmembers()[-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[: last.offset_data + last.size + (-last.size % 512)])
    empty = rewrite(good, tmp_path / "empty.tar", lambda files: {"manifest.json": b"[]"})
    for archive, words in [
        (cut, f"the tar ends after member {last.name} without its end-of-archive blocks"),
        (empty, "manifest.json: no images in the archive"),
    ]:
        report = await hatchway.verify(archive)
        assert not report.ok and words in (report.problem or ""), report.problem
        store = tmp_path / f"store-{archive.stem}"
        with pytest.raises(hatchway.StoreError, match=words):
            await hatchway.load([archive], store=store)
        assert not store.exists()
        with pytest.raises(hatchway.StoreError, match=words):
            await hatchway.save([f"docker-archive:{archive}"], tmp_path / "o.tar")
        assert not (tmp_path / "o.tar").exists()


def test_cli_load_from_stdin_and_images(family: Family, tmp_path: Path) -> None:
    bundle = save_sync(family, tmp_path / "b.tar.gz", ["app:1.0", "tools"])
    store = tmp_path / "s"
    with bundle.open("rb") as stdin:
        result = subprocess.run(
            [*HATCHWAY, "load", "--store", str(store)], stdin=stdin, capture_output=True
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "Loaded image: docker.io/library/app:1.0",
        "Loaded image: docker.io/library/tools:latest",
    ]
    listing = run("images", "--store", str(store)).stdout.decode()
    assert "app " in listing and "tools " in listing
    assert "load" in run("--help").stdout.decode()
    assert "docker-archive:PATH" in run("load", "--help").stdout.decode()


async def test_pull_takes_archive_names_too(family: Family, tmp_path: Path) -> None:
    bundle = await save(family, tmp_path / "b.tar.zst", ["tools"])
    result = await hatchway.pull([f"docker-archive:{bundle}"], store=tmp_path / "s")
    assert [i.name for i in result.images] == ["docker.io/library/tools:latest"]


def _layout_with_a_lying_layer(root: Path) -> str:
    """An OCI layout whose one gzip layer is intact as a blob (its digest matches) but
    inflates to other content than the config's diffID says."""
    from hatchway.testing.layout import LayoutBuilder, layer_tar

    builder = LayoutBuilder(root)
    layer = builder.layer({"etc/one": b"one\n"})
    lying = dataclasses.replace(
        layer, diff_id="sha256:" + hashlib.sha256(layer_tar({"etc/two": b"two\n"})).hexdigest()
    )
    image = builder.image([lying])
    builder.tag(image, "lying:1")
    builder.save()
    return layer.digest


async def test_load_checks_every_layer_against_its_diff_id(tmp_path: Path) -> None:
    """A layer whose blob is intact but whose content is not what the config says is refused
    by load (before, it was stored, and every later save refused it): nothing is named."""
    digest = _layout_with_a_lying_layer(tmp_path / "layout")
    store = tmp_path / "store"
    with pytest.raises(hatchway.DigestMismatch, match="diff_id"):
        await hatchway.load([f"oci:{tmp_path / 'layout'}"], store=store)
    assert index_of(store) == []
    assert digest.removeprefix("sha256:") not in blobs(store)


async def test_push_checks_every_layer_against_its_diff_id(
    tmp_path: Path, push_target: object
) -> None:
    """The same layer pushed from a store (uploaded from its file) is refused before any
    manifest is written."""
    from tests.peers import Registry
    from tests.registry_support import options

    assert isinstance(push_target, Registry)
    _layout_with_a_lying_layer(tmp_path / "layout")
    with pytest.raises(hatchway.DigestMismatch, match="diff_id"):
        await hatchway.push(
            ["lying:1"], f"{push_target.host}/lying", store=tmp_path / "layout", registry=options()
        )
