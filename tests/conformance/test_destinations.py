"""The contract every destination passes (``transports/base.py``), whatever it writes into.

For each transport of :data:`~tests.conformance.transports.DESTINATIONS`, on both backends:
the corpus copied in reads back with the same images and names; a copy that fails on its last
blob, or is cancelled half-way, leaves nothing a user can see; a destination that declares it
holds layers moves none of them a second time (but those it re-encodes, to learn their digest);
and the engine never calls what a destination declares it does not do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from hatchway import HatchwayError, StoreError
from hatchway.engine.copy import CopyReport, copy
from hatchway.progress import ignore_progress
from hatchway.reference import parse_query
from hatchway.transports.base import (
    CopyContext,
    CopyPlan,
    Source,
)
from hatchway.transports.layout.source import OCILayoutStore
from tests.conformance.corpus import NAMES, Corpus
from tests.conformance.transports import DESTINATIONS, DestinationTransport, OpenedDestination
from tests.support import ProbeStore

pytestmark = [pytest.mark.anyio, pytest.mark.peers]


@pytest.fixture(params=DESTINATIONS, ids=str)
def transport(request: pytest.FixtureRequest) -> DestinationTransport:
    return request.param  # type: ignore[no-any-return]


@asynccontextmanager
async def opened(
    transport: DestinationTransport,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[OpenedDestination]:
    async with transport.open(corpus, tmp_path, request) as opened:
        yield opened


async def _copy(source: Source, opened: OpenedDestination, jobs: int = 4) -> CopyReport[Any]:
    return await copy(
        [parse_query(name) for name in NAMES],
        source,
        opened.destination,
        platform=None,
        jobs=jobs,
        progress=ignore_progress,
    )


async def test_what_is_copied_in_reads_back_the_same(
    transport: DestinationTransport,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store = OCILayoutStore(corpus.root)
    async with opened(transport, corpus, tmp_path, request) as destination:
        try:
            await _copy(store, destination)
        finally:
            await store.aclose()
        if destination.read_back is None:
            return  # keeps nothing: that it accepted every byte is the whole contract
        async with destination.read_back() as (back, name_of):
            for name in NAMES:
                [image] = await back.resolve(parse_query(name_of(name)), None)
                expected = corpus.image(name)
                assert image.id == expected.id, name
                assert [t.recorded_tag().rsplit("/", 1)[-1] for t in image.tags] == [name]
                assert [la.diff_id for la in image.layers] == [la.diff_id for la in expected.layers]


def _failing(corpus: Corpus, hook: Callable[[str], Awaitable[None]]) -> ProbeStore:
    """The corpus store, streaming every blob (no local files) through ``hook`` first."""
    return ProbeStore(OCILayoutStore(corpus.root), blob_hook=hook, local=False)


async def test_a_copy_that_fails_late_leaves_nothing_to_see(
    transport: DestinationTransport,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    last = corpus.image("multi:1").layers[-1].digest  # the host platform's own layer

    async def hook(digest: str) -> None:
        if digest == last:
            raise StoreError("conformance", f"blob {digest} refused on purpose")

    source = _failing(corpus, hook)
    async with opened(transport, corpus, tmp_path, request) as destination:
        before = destination.state()
        try:
            with pytest.raises(HatchwayError, match="refused on purpose"):
                await _copy(source, destination, jobs=1)
        finally:
            await source.aclose()
        assert destination.state() == before


async def test_a_copy_cancelled_half_way_leaves_nothing_to_see(
    transport: DestinationTransport,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    scope = anyio.CancelScope()
    seen: list[str] = []

    async def hook(digest: str) -> None:
        seen.append(digest)
        if len(seen) == 3:
            scope.cancel()
            await anyio.lowlevel.checkpoint()

    source = _failing(corpus, hook)
    async with opened(transport, corpus, tmp_path, request) as destination:
        before = destination.state()
        try:
            with scope:
                await _copy(source, destination, jobs=2)
        finally:
            await source.aclose()
        assert scope.cancelled_caught
        assert destination.state() == before


async def test_a_destination_that_holds_layers_moves_none_twice(
    transport: DestinationTransport,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    async with opened(transport, corpus, tmp_path, request) as destination:
        if not destination.destination.capabilities.holds_layers:
            return  # an archive or a check writes everything every time, by contract
        store = OCILayoutStore(corpus.root)
        try:
            first = await _copy(store, destination)
            after_first = destination.state()
            again = await _copy(store, destination)
        finally:
            await store.aclose()
        assert first.layers == again.layers > 0
        # Only a layer whose stored form the destination makes itself (a registry compressing
        # an uncompressed layer) is read again, to learn its digest.
        assert again.blobs_fetched == destination.reencodes
        assert destination.state() == after_first


class _Declaring:
    """A destination wrapper that declares less than the one it wraps, and fails the copy
    if the engine calls what it declared it does not do."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.description = inner.description
        self.capabilities = replace(
            inner.capabilities, holds_layers=False, adopts_local_files=False
        )

    def receive(self, plan: CopyPlan, context: CopyContext) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def receiving() -> AsyncIterator[Any]:
            async with self.inner.receive(plan, context) as receiver:
                yield _Strict(receiver)

        return receiving()


class _Strict:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def has_layer(self, layer: Any) -> bool:
        raise AssertionError("has_layer called, though holds_layers was declared false")

    async def adopt_file(self, layer: Any, local: Any, source: str) -> bool:
        raise AssertionError("adopt_file called, though adopts_local_files was declared false")

    async def open_layer(self, layer: Any) -> Any:
        return await self._inner.open_layer(layer)

    async def commit(self) -> Any:
        return await self._inner.commit()


async def test_the_engine_calls_only_what_a_destination_declares(
    transport: DestinationTransport,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store = OCILayoutStore(corpus.root)
    async with opened(transport, corpus, tmp_path, request) as destination:
        strict = replace(destination, destination=_Declaring(destination.destination))
        try:
            report = await _copy(store, strict)
        finally:
            await store.aclose()
        assert report.blobs_fetched == len(corpus.blobs())
