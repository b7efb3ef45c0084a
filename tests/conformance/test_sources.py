"""The contract every source passes (``transports/base.py``), whatever it reads from.

For each transport of :data:`~tests.conformance.transports.SOURCES`, on both backends:
names of every kind it has resolve to the corpus images (digests kept where it keeps them);
an unknown name is :class:`~hatchway.NoSuchImage`; blobs are served as their descriptors
promise and exactly once per copy; a damaged blob fails the copy with an error of the tree;
capabilities are honest (no local file from a source that declares none; concurrent reads
work where declared); and a call cancelled at any point leaves nothing open and the source
still usable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from hatchway import HatchwayError, NoSuchImage
from hatchway.engine.copy import copy
from hatchway.engine.verify import VerifyingDestination
from hatchway.model import Descriptor, Platform
from hatchway.progress import ignore_progress
from hatchway.reference import parse_query
from hatchway.testing import CountingStore
from hatchway.transports.base import BlobSource, ResolvedImage
from tests.conformance.conftest import open_descriptors
from tests.conformance.corpus import NAMES, Corpus
from tests.conformance.transports import SOURCES, Kind, OpenedSource, SourceTransport

pytestmark = [pytest.mark.anyio, pytest.mark.peers]


@pytest.fixture(params=SOURCES, ids=str)
def transport(request: pytest.FixtureRequest) -> SourceTransport:
    return request.param  # type: ignore[no-any-return]


@asynccontextmanager
async def opened(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedSource]:
    async with transport.open(corpus, tmp_path, request) as opened:
        yield opened


def _spelled(opened: OpenedSource, kind: Kind) -> list[tuple[str, str]]:
    """The (corpus name, query text) pairs this transport has for ``kind``."""
    found = []
    for name in NAMES:
        text = opened.spell(kind, name)
        if text is not None:
            found.append((name, text))
    return found


async def _resolve(opened: OpenedSource, text: str) -> list[ResolvedImage]:
    return await opened.source.resolve(parse_query(text), None)


def _layers(images: list[ResolvedImage]) -> dict[str, tuple[Descriptor, BlobSource]]:
    return {la.blob.digest: (la.blob, i.source) for i in images for la in i.layers}


async def _everything(opened: OpenedSource) -> list[ResolvedImage]:
    images = []
    for _, text in _spelled(opened, Kind.TAG):
        images += await _resolve(opened, text)
    return images


async def _read(source: BlobSource, blob: Descriptor) -> bytes:
    data = bytearray()
    async with source.open_blob(blob) as chunks:
        async for chunk in chunks:
            data += chunk
    return bytes(data)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
async def test_every_kind_of_name_resolves_to_the_corpus_images(
    transport: SourceTransport,
    kind: Kind,
    corpus: Corpus,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    async with opened(transport, corpus, tmp_path, request) as source:
        pairs = _spelled(source, kind)
        if kind is Kind.TAG:
            assert len(pairs) == len(NAMES)  # every source has tags
        for name, text in pairs:
            images = await _resolve(source, text)
            expected = [corpus.image(n) for n in source.expect(kind, name)]
            assert [i.id for i in images] == [e.id for e in expected], text
            if source.keeps_digests:
                assert [i.manifest_digest for i in images] == [e.manifest for e in expected]
            for image, wanted in zip(images, expected, strict=True):
                assert [la.blob.digest for la in image.layers] == [
                    la.digest for la in wanted.layers
                ] or not source.keeps_digests
                assert [la.diff_id for la in image.layers] == [la.diff_id for la in wanted.layers]
                recorded = [t.recorded_tag() for t in image.tags]
                if kind in (Kind.DIGEST, Kind.ID, Kind.ID_PREFIX):
                    assert recorded == [], text
                elif kind in (Kind.TAG, Kind.REPOSITORY):
                    assert [t.rsplit("/", 1)[-1] for t in recorded] == [wanted.name], text


async def test_an_unknown_name_is_no_such_image(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with opened(transport, corpus, tmp_path, request) as source:
        text = source.spell(Kind.TAG, "app:1.0")
        assert text is not None
        with pytest.raises(NoSuchImage):
            await _resolve(source, text.replace("app:1.0", "app:nope"))


async def test_blobs_are_what_their_descriptors_promise(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every layer blob, streamed and (where the source names one) read from its local file,
    has its descriptor's size and digest."""
    async with opened(transport, corpus, tmp_path, request) as source:
        for blob, blobs in _layers(await _everything(source)).values():
            data = await _read(blobs, blob)
            assert len(data) == blob.size
            assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
            local = blobs.local_file(blob)
            if local is not None:
                whole = await anyio.Path(local.path).read_bytes()
                end = local.offset + (blob.size if local.size is None else local.size)
                assert whole[local.offset : end] == data


async def test_a_copy_reads_every_blob_exactly_once(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with opened(transport, corpus, tmp_path, request) as source:
        counting = CountingStore(source.source)
        queries = [parse_query(text) for _, text in _spelled(source, Kind.TAG)]
        await copy(
            queries,
            counting,
            VerifyingDestination(),
            platform=None,
            jobs=8,
            progress=ignore_progress,
        )
        read = {d: counting.fetches(d) for d in set(counting.opens) | set(counting.locates)}
        layers = _layers(await _everything(source))
        assert read == dict.fromkeys(layers, 1)


async def test_a_damaged_blob_fails_the_copy_with_an_error_of_the_tree(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with opened(transport, corpus, tmp_path, request) as source:
        damaged = corpus.image("app:2.0").layers[-1]  # the uncompressed layer: no codec error
        text = source.spell(Kind.TAG, "app:2.0")
        assert text is not None
        with source.damage(damaged.digest), pytest.raises(HatchwayError) as failed:
            await copy(
                [parse_query(text)],
                source.source,
                VerifyingDestination(),
                platform=None,
                jobs=4,
                progress=ignore_progress,
            )
        assert damaged.digest in str(failed.value) or damaged.diff_id in str(failed.value)


async def test_declared_capabilities_are_honest(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with opened(transport, corpus, tmp_path, request) as source:
        layers = _layers(await _everything(source))
        for blob, blobs in layers.values():
            declared = blobs.capabilities
            if not declared.local_files:
                assert blobs.local_file(blob) is None
            if not declared.size_hints:
                assert blobs.size_hint(blob) is None
            origin = declared.origin
            if origin is not None:  # only a registry repository has one, and it is this one
                assert blobs.description.startswith(f"registry {origin.registry}")
        concurrent = [(b, s) for b, s in layers.values() if s.capabilities.concurrent]
        if len(concurrent) >= 2:
            # Two blobs read by two tasks, each holding its stream open until both are open.
            both_open = anyio.Event()
            opened_count = 0
            sizes: list[int] = []

            async def read(blob: Descriptor, blobs: BlobSource) -> None:
                nonlocal opened_count
                async with blobs.open_blob(blob) as chunks:
                    opened_count += 1
                    if opened_count == 2:
                        both_open.set()
                    await both_open.wait()
                    sizes.append(sum([len(chunk) async for chunk in chunks]))

            async with anyio.create_task_group() as tg:
                for blob, blobs in concurrent[:2]:
                    tg.start_soon(read, blob, blobs)
            assert sorted(sizes) == sorted(b.size for b, _ in concurrent[:2])


async def test_a_call_cancelled_anywhere_leaves_nothing_open(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Resolution, opening a blob and reading it, each cancelled: the source still works
    afterwards, and once closed it holds no descriptor it opened."""
    before = open_descriptors()
    async with opened(transport, corpus, tmp_path, request) as source:
        text = source.spell(Kind.TAG, "app:2.0")
        assert text is not None
        with anyio.CancelScope() as scope:
            scope.cancel()
            await _resolve(source, text)
        images = await _resolve(source, text)
        layer = images[0].layers[0].blob
        blobs = images[0].source
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with blobs.open_blob(layer) as chunks:
                async for _ in chunks:
                    pass
        with anyio.CancelScope() as scope:
            async with blobs.open_blob(layer) as chunks:
                async for _ in chunks:
                    scope.cancel()  # mid-stream
                    await anyio.lowlevel.checkpoint()
        assert await _read(blobs, layer) != b""  # still usable
    assert open_descriptors() - before == set()


async def test_the_platform_is_chosen_or_refused(
    transport: SourceTransport, corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An index resolves to the asked platform's manifest; a platform it lacks is refused
    with an error of the tree."""
    async with opened(transport, corpus, tmp_path, request) as source:
        text = source.spell(Kind.TAG, "multi:1")
        assert text is not None
        host = Platform.host()
        [image] = await source.source.resolve(parse_query(text), host)
        assert image.id == corpus.image("multi:1").id
        with pytest.raises(HatchwayError):
            await source.source.resolve(parse_query(text), Platform("linux", "s390x"))
        assert os.path.exists(corpus.root)
