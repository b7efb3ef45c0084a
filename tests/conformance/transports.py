"""Every transport, as the conformance suite sees it: how to put the corpus there, how to spell
each kind of name, and how to look at what a destination holds.

A new transport joins the suite by adding one :class:`SourceTransport` to :data:`SOURCES`
and, if it is a destination, one :class:`DestinationTransport` to :data:`DESTINATIONS`.  The
tests (``test_sources.py``, ``test_destinations.py``) then hold it to the same contract as
every other.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import zstandard

import hatchway
from hatchway.engine.verify import VerifyingDestination
from hatchway.formats import ArchiveFormat
from hatchway.reference import ImageQuery, parse_query
from hatchway.testing.layout import BuiltLayer
from hatchway.transports.archive.destination import ArchiveDestination
from hatchway.transports.archive.outputs import output_for
from hatchway.transports.archive.source import ArchiveStore
from hatchway.transports.base import Destination, Source
from hatchway.transports.layout.destination import LayoutDestination
from hatchway.transports.layout.source import OCILayoutStore
from hatchway.transports.registry.destination import RegistryDestination
from hatchway.transports.registry.source import RegistryStore
from hatchway.transports.registry.targets import parse_push_target
from tests.conformance.corpus import NAMES, Corpus


class Kind(Enum):
    """The kinds of name a source may resolve."""

    TAG = "tag"  # one tag
    REPOSITORY = "repository"  # every tag of a repository
    DIGEST = "digest"  # repo@sha256:... (a manifest or index digest)
    ID = "id"  # the full image ID
    ID_PREFIX = "id-prefix"  # an unambiguous prefix of it
    POSITION = "position"  # the N-th image of an archive
    EVERYTHING = "everything"  # every image an archive holds


@dataclass
class OpenedSource:
    """The corpus, put into one transport and opened as a :class:`Source`.

    ``spell(kind, name)`` is how a query of that kind for the corpus image ``name`` is
    written here (``None``: this transport has no such names); ``expect(kind, name)`` the
    corpus images it must resolve to, in order (default: ``name`` alone).
    ``damage(digest)`` changes one byte of that blob where the transport keeps it, for as
    long as its context lasts (some places are shared: a registry's storage).
    """

    source: Source
    spell: Callable[[Kind, str], str | None]
    keeps_digests: bool
    damage: Callable[[str], AbstractContextManager[None]]
    expect: Callable[[Kind, str], list[str]] = field(default=lambda kind, name: [name])

    def query(self, kind: Kind, name: str) -> ImageQuery | None:
        text = self.spell(kind, name)
        return None if text is None else parse_query(text)


Opener = Callable[[Corpus, Path, pytest.FixtureRequest], AbstractAsyncContextManager[OpenedSource]]


@dataclass(frozen=True)
class SourceTransport:
    name: str
    open: Opener

    def __str__(self) -> str:
        return self.name


def _flip(path: Path, offset: int) -> None:
    """Invert one byte (doing it twice restores it)."""
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


@contextmanager
def _flipped(path: Path, offset: int) -> Iterator[None]:
    """One byte of ``path`` inverted while the context lasts."""
    _flip(path, offset)
    try:
        yield
    finally:
        _flip(path, offset)


def _all_layers(corpus: Corpus) -> list[BuiltLayer]:
    return [layer for image in corpus.images.values() for layer in image.layers]


def _blob_file(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _member_offset(tar: Path, name: str) -> int:
    import tarfile

    with tarfile.open(tar) as archive:
        return archive.getmember(name).offset_data


# -- sources -----------------------------------------------------------------------------------


def _store_names(corpus: Corpus) -> Callable[[Kind, str], str | None]:
    def spell(kind: Kind, name: str) -> str | None:
        image = corpus.image(name)
        repository = name.split(":")[0]
        if kind is Kind.TAG:
            return name
        if kind is Kind.REPOSITORY:
            return repository
        if kind is Kind.DIGEST:
            return f"{repository}@{image.built.digest}"
        if kind is Kind.ID:
            return image.id
        if kind is Kind.ID_PREFIX:
            return image.id.removeprefix("sha256:")[:12]
        return None

    return spell


def _by_repository(kind: Kind, name: str) -> list[str]:
    if kind is Kind.REPOSITORY:
        return [n for n in NAMES if n.split(":")[0] == name.split(":")[0]]
    return [name]


@asynccontextmanager
async def open_store(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedSource]:
    root = tmp / "store"
    shutil.copytree(corpus.root, root)
    store = OCILayoutStore(root)
    try:
        yield OpenedSource(
            store,
            _store_names(corpus),
            keeps_digests=True,
            damage=lambda digest: _flipped(_blob_file(root, digest), 0),
            expect=_by_repository,
        )
    finally:
        await store.aclose()


def _archive_names(prefix: str, order: tuple[str, ...]) -> Callable[[Kind, str], str | None]:
    def spell(kind: Kind, name: str) -> str | None:
        if kind is Kind.TAG:
            return f"{prefix}:{name}"
        if kind is Kind.POSITION:
            return f"{prefix}:@{order.index(name)}"
        if kind is Kind.EVERYTHING:
            return prefix
        return None

    return spell


def _everything(order: tuple[str, ...]) -> Callable[[Kind, str], list[str]]:
    return lambda kind, name: list(order) if kind is Kind.EVERYTHING else [name]


@asynccontextmanager
async def open_oci_dir(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedSource]:
    root = tmp / "layout"
    shutil.copytree(corpus.root, root)
    archives = ArchiveStore(tmp)
    try:
        yield OpenedSource(
            archives,
            _archive_names(f"oci:{root}", NAMES),
            keeps_digests=True,
            damage=lambda digest: _flipped(_blob_file(root, digest), 0),
            expect=_everything(NAMES),
        )
    finally:
        await archives.aclose()


@asynccontextmanager
async def open_oci_archive(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedSource]:
    tar = corpus.layout_tar(tmp / "layout.tar")
    archives = ArchiveStore(tmp)

    def damage(digest: str) -> AbstractContextManager[None]:
        return _flipped(tar, _member_offset(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}"))

    try:
        yield OpenedSource(
            archives,
            _archive_names(f"oci-archive:{tar}", NAMES),
            keeps_digests=True,
            damage=damage,
            expect=_everything(NAMES),
        )
    finally:
        await archives.aclose()


def _docker_archive(suffix: str) -> Opener:
    @asynccontextmanager
    async def open_docker_archive(
        corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[OpenedSource]:
        bundle = tmp / f"bundle{suffix}"
        await hatchway.save(list(NAMES), bundle, store=corpus.root)
        archives = ArchiveStore(tmp)

        @contextmanager
        def damage(digest: str) -> Iterator[None]:
            # The bundle holds layers uncompressed, named by diffID: damage that member (in
            # the tar inside, for a compressed bundle).
            diff_id = next(la.diff_id for la in _all_layers(corpus) if la.digest == digest)
            member = f"blobs/sha256/{diff_id.removeprefix('sha256:')}"
            if suffix == ".tar":
                with _flipped(bundle, _member_offset(bundle, member)):
                    yield
                return
            whole = bundle.read_bytes()
            plain = tmp / "plain.tar"
            plain.write_bytes(zstandard.ZstdDecompressor().decompress(whole, 1 << 30))
            _flip(plain, _member_offset(plain, member))
            bundle.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
            try:
                yield
            finally:
                bundle.write_bytes(whole)

        try:
            yield OpenedSource(
                archives,
                _archive_names(f"docker-archive:{bundle}", NAMES),
                keeps_digests=False,  # the docker layout holds layers uncompressed
                damage=damage,
                expect=_everything(NAMES),
            )
        finally:
            await archives.aclose()

    return open_docker_archive


@asynccontextmanager
async def open_registry(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedSource]:
    from tests.push_support import unique_prefix
    from tests.registry_support import options, push_image

    lab: Any = request.getfixturevalue("lab")
    prefix = unique_prefix(request)
    for name in NAMES:
        repository, tag = name.split(":")
        push_image(
            lab.registry.url, f"{prefix}/{repository}", tag, corpus.root, corpus.image(name).built
        )
    host = lab.registry.host

    def spell(kind: Kind, name: str) -> str | None:
        repository, tag = name.split(":")
        where = f"docker://{host}/{prefix}/{repository}"
        if kind is Kind.TAG:
            return f"{where}:{tag}"
        if kind is Kind.DIGEST:
            return f"{where}@{corpus.image(name).built.digest}"
        return None

    def damage(digest: str) -> AbstractContextManager[None]:
        hexa = digest.removeprefix("sha256:")
        blobs = lab.registry.root / "docker/registry/v2/blobs/sha256"
        return _flipped(blobs / hexa[:2] / hexa / "data", 0)

    store = RegistryStore(options())
    try:
        yield OpenedSource(store, spell, keeps_digests=True, damage=damage)
    finally:
        await store.aclose()


#: Every source transport.  A new one joins the suite here.
SOURCES = [
    SourceTransport("store", open_store),
    SourceTransport("oci", open_oci_dir),
    SourceTransport("oci-archive", open_oci_archive),
    SourceTransport("docker-archive", _docker_archive(".tar")),
    SourceTransport("docker-archive.tar.zst", _docker_archive(".tar.zst")),
    SourceTransport("registry", open_registry),
]


# -- destinations ------------------------------------------------------------------------------


ReadBack = Callable[[], AbstractAsyncContextManager[tuple[Source, Callable[[str], str]]]]


@dataclass
class OpenedDestination:
    """One destination, and how to look at it.

    ``state()`` is what a user could see there (compared before and after a copy that must
    change nothing); ``read_back`` opens a source over what the destination holds and the
    name its copy of a corpus image has there (``None``: nothing to read back).
    """

    destination: Destination[Any]
    state: Callable[[], object]
    read_back: ReadBack | None
    #: Corpus layers the destination stores in a form of its own making (compressed on the
    #: way), which a copy must read again to know whether the destination holds them.
    reencodes: int = 0


DestinationOpener = Callable[
    [Corpus, Path, pytest.FixtureRequest], AbstractAsyncContextManager[OpenedDestination]
]


@dataclass(frozen=True)
class DestinationTransport:
    name: str
    open: DestinationOpener

    def __str__(self) -> str:
        return self.name


def _listing(directory: Path) -> list[str]:
    return sorted(os.path.relpath(p, directory) for p in directory.rglob("*"))


def _archive(suffix: str) -> DestinationOpener:
    @asynccontextmanager
    async def open_archive(
        corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[OpenedDestination]:
        out = tmp / "out" / f"bundle{suffix}"
        out.parent.mkdir()
        destination = ArchiveDestination(output_for(str(out), fsync=False), ArchiveFormat.DOCKER)

        @asynccontextmanager
        async def read_back() -> AsyncIterator[tuple[Source, Callable[[str], str]]]:
            archives = ArchiveStore(tmp)
            try:
                yield archives, lambda name: f"docker-archive:{out}:{name}"
            finally:
                await archives.aclose()

        yield OpenedDestination(destination, lambda: _listing(out.parent), read_back)

    return open_archive


@asynccontextmanager
async def open_layout(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedDestination]:
    root = tmp / "store"
    destination = LayoutDestination(root)

    def state() -> object:
        """The names the store lists (a store made by a failed copy is a valid empty one)."""
        index = root / "index.json"
        return json.loads(index.read_bytes())["manifests"] if index.exists() else []

    @asynccontextmanager
    async def read_back() -> AsyncIterator[tuple[Source, Callable[[str], str]]]:
        store = OCILayoutStore(root)
        try:
            yield store, lambda name: name
        finally:
            await store.aclose()

    yield OpenedDestination(destination, state, read_back)


@asynccontextmanager
async def open_registry_destination(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedDestination]:
    from tests.push_support import tags_of, unique_prefix
    from tests.registry_support import options

    registry: Any = request.getfixturevalue("push_target")
    prefix = unique_prefix(request)
    target = parse_push_target(f"{registry.host}/{prefix}")
    destination = RegistryDestination(target, options(), tmpdir=tmp)
    repositories = sorted({f"{prefix}/library/{n.split(':')[0]}" for n in NAMES})

    def state() -> object:
        return [tags_of(registry, r) for r in repositories]

    @asynccontextmanager
    async def read_back() -> AsyncIterator[tuple[Source, Callable[[str], str]]]:
        store = RegistryStore(options())
        try:
            yield store, lambda name: f"docker://{registry.host}/{prefix}/library/{name}"
        finally:
            await store.aclose()

    uncompressed = {la.digest for la in _all_layers(corpus) if la.compression == "none"}
    yield OpenedDestination(destination, state, read_back, reencodes=len(uncompressed))


@asynccontextmanager
async def open_verifying(
    corpus: Corpus, tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenedDestination]:
    yield OpenedDestination(VerifyingDestination(), lambda: None, None)


#: Every destination transport.  A new one joins the suite here.
DESTINATIONS = [
    DestinationTransport("archive", _archive(".tar")),
    DestinationTransport("archive.tar.zst", _archive(".tar.zst")),
    DestinationTransport("store", open_layout),
    DestinationTransport("registry", open_registry_destination),
    DestinationTransport("verifying", open_verifying),
]
