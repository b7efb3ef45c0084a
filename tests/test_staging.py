"""Staging: small layers stay in memory within a budget, larger ones spill into files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.limits import SMALL_STAGED
from hatchway.model import Compression, Descriptor, Layer
from hatchway.transports.archive.staging import MemoryBudget, StagedLayer, StagingFile

pytestmark = pytest.mark.anyio

DIFF = "sha256:" + "ab" * 32


def _layer() -> Layer:
    return Layer(
        Descriptor("application/vnd.oci.image.layer.v1.tar", DIFF, 1), DIFF, Compression.NONE
    )


async def _stage(tmp_path: Path, chunks: list[bytes], budget: MemoryBudget) -> StagedLayer:
    staged: list[StagedLayer] = []
    target = StagingFile(tmp_path, _layer(), _layer().diff_id, staged.append, budget)
    for chunk in chunks:
        target.write(chunk)
    await target.commit(sum(map(len, chunks)))
    return staged[0]


async def test_a_small_layer_is_kept_in_memory(tmp_path: Path) -> None:
    budget = MemoryBudget(1 << 20)
    staged = await _stage(tmp_path, [b"a" * 1000, b"b" * 24], budget)
    assert staged.data == b"a" * 1000 + b"b" * 24 and staged.path == ""
    assert list(tmp_path.iterdir()) == []
    assert not budget.take((1 << 20) - 1000)  # the layer's bytes are counted


async def test_a_layer_growing_past_the_limit_spills_into_a_file(tmp_path: Path) -> None:
    budget = MemoryBudget(1 << 30)
    chunks = [b"x" * (SMALL_STAGED - 10), b"y" * 100]
    staged = await _stage(tmp_path, chunks, budget)
    assert staged.data is None
    assert Path(staged.path).read_bytes() == b"".join(chunks)
    assert budget.take(1 << 30)  # the spilled bytes were given back


async def test_an_exhausted_budget_sends_layers_to_files(tmp_path: Path) -> None:
    budget = MemoryBudget(100)
    staged = await _stage(tmp_path, [b"z" * 500], budget)
    assert staged.data is None and Path(staged.path).read_bytes() == b"z" * 500


async def test_a_discarded_layer_gives_its_memory_back(tmp_path: Path) -> None:
    budget = MemoryBudget(1000)
    target = StagingFile(tmp_path, _layer(), _layer().diff_id, lambda staged: None, budget)
    target.write(b"q" * 800)
    await target.discard()
    assert budget.take(1000)
