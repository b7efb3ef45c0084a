"""Golden digests: the same inputs give the same bytes, release after release.

These pin the exact archive each layout writes for the test family and the sample store, and
the exact ``index.json`` a pull writes.  A refactor that changes one byte fails here; a change
that means to change the bytes must say so and update the digest in the same commit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

import hatchway
from tests.support import Family

pytestmark = pytest.mark.anyio

FAMILY_NAMES = [
    "app",
    "tools:latest",
    "busybox",
    "127.0.0.1:5000/other:v1",
    "multi:latest",
    "app@{app1}",
    "{orphan}",
]

#: By layout; ``docker`` keeps the blobs as stored, ``docker+uncompressed`` is the same layout
#: with ``--uncompressed-layers`` (what ``docker`` wrote before the blobs were kept).
FAMILY_GOLDEN = {
    "docker": "e9e78bacd3f5f118d5602c1f59f7c05d0710646e4fa68a930e09d98c2974cbd3",
    "docker+uncompressed": "3b69356fd9cedcd2845090e0aef0d52dad27aa4448553a4c983cf63c696b8fec",
    "docker-1.10": "db1c5dd8327623f4cf63a07d72d024a7d98ed3538f0f3a0241c0e824943423b2",
    "docker-legacy": "1c457fb1cffbd6b72e6f91eb726dbbc5e1e8155fa67921c2c7715ea8efde325b",
}
SAMPLE_GOLDEN = {
    False: "ce0a35c2ebe10762a6ef4d1d8eefbc56b9e0f796ff75264f6389a39fa874a4ec",
    True: "715311f19493c57dded727310e692b4a756ffc553c79b45a6954d47ee65c1f4a",
}
PULLED_INDEX_GOLDEN = "9b984cc6bf636ac34c91839527f46e8fdc6a95e6f56f10fd25766f05a383ddd9"


def _names(family: Family) -> list[str]:
    values = {
        "app1": family.images["app1"].digest,
        "orphan": family.images["orphan"].config_digest.removeprefix("sha256:")[:12],
    }
    return [name.format(**values) for name in FAMILY_NAMES]


@pytest.mark.parametrize("layout", sorted(FAMILY_GOLDEN))
async def test_family_archive_bytes_are_pinned(family: Family, tmp_path: Path, layout: str) -> None:
    out = tmp_path / "out.tar"
    archive_format, _, uncompressed = layout.partition("+")
    await hatchway.save(
        _names(family),
        out,
        store=family.root,
        format=archive_format,
        platform="linux/amd64",
        jobs=3,
        uncompressed_layers=bool(uncompressed),
    )
    got = hashlib.sha256(out.read_bytes()).hexdigest()
    assert got == FAMILY_GOLDEN[layout]


@pytest.mark.parametrize("uncompressed", [False, True])
async def test_sample_store_archive_bytes_are_pinned(tmp_path: Path, uncompressed: bool) -> None:
    script = Path(__file__).parent.parent / "scripts" / "make_sample_store.py"
    spec = importlib.util.spec_from_file_location("make_sample_store", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path / "store")
    out = tmp_path / "sample.tar"
    await hatchway.save(
        ["sample/app", "sample/tools", "sample/multi"],
        out,
        store=tmp_path / "store",
        platform="linux/amd64",
        uncompressed_layers=uncompressed,
    )
    got = hashlib.sha256(out.read_bytes()).hexdigest()
    assert got == SAMPLE_GOLDEN[uncompressed]


@pytest.mark.peers
async def test_pulled_index_json_is_pinned(lab: object, tmp_path: Path) -> None:
    from tests.registry_support import Lab, options

    assert isinstance(lab, Lab)
    names = ["hw/docker:1", "hw/oci:1", "hw/family-c:1"]
    store = tmp_path / "store"
    await hatchway.pull(
        [lab.images.name(n) for n in names], store=store, registry=options(), jobs=2
    )
    digest = lab.images.images["hw/oci:1"].digest
    await hatchway.pull([f"{lab.registry.host}/hw/oci@{digest}"], store=store, registry=options())
    # The registry's port changes from run to run: pin the document with the host replaced.
    text = (store / "index.json").read_text().replace(lab.registry.host, "REGISTRY")
    assert json.loads(text)["manifests"]
    got = hashlib.sha256(text.encode()).hexdigest()
    assert got == PULLED_INDEX_GOLDEN
