"""Remote blobs fetched once for every concurrent operation of a session.

Two saves running at once in one :class:`hatchway.Session` often need the same layer (a shared
base image).  :class:`BlobCache` makes the network see it once: :meth:`BlobCache.wrap` wraps a
source so that every *remote* blob (one its source cannot hand over as a local file) is fetched
by the first operation that opens it, teed into a cache file while that operation consumes it,
and served from that file to every other operation that asks while the first one still runs or
after it finished.  An operation that opens a blob another one is fetching waits for the fetch
to end (it holds no slot of the engine meanwhile: the engine's slots are per operation).

The cache publishes a file only after the bytes it teed hash to the blob's digest and have its
size — it does not trust the consumer to have checked.  A fetch that fails or is cancelled
publishes nothing; the next operation that needs the blob fetches it itself.  Files live in a
private directory and are removed when no operation of the session runs any more (the cache
shares fetches between *concurrent* operations; it is not a long-term store — ``pull`` is).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio

from hatchway.errors import OutputError, StoreError
from hatchway.files import write_all
from hatchway.limits import CHUNK_SIZE
from hatchway.model import Descriptor, hex_of
from hatchway.reference import ImageQuery
from hatchway.transports.base import BlobSource, LocalBlob, ResolvedImage, Selection, Source


class _Entry:
    __slots__ = ("done", "path")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.path: Path | None = None  # set when the blob is published


class BlobCache:
    """Shared, verified copies of remote blobs for the concurrent operations of a session."""

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self._parent = parent
        self._directory: Path | None = None
        self._entries: dict[str, _Entry] = {}
        self._running = 0
        self._lock = anyio.Lock()
        #: How many blobs were fetched from their source (not served from the cache).
        self.fetches = 0

    def wrap(self, source: Source) -> Source:
        """``source``, with its remote blobs fetched through this cache."""
        return _CachingSource(source, self)

    @asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Mark one operation as running; when the last one ends, the cache is emptied."""
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                await self._clear()

    async def aclose(self) -> None:
        await self._clear()

    async def _clear(self) -> None:
        # Fetches run inside operations: with none running, every entry is finished.
        self._entries.clear()
        directory, self._directory = self._directory, None
        if directory is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, directory, True)

    async def _ensure_directory(self) -> Path:
        async with self._lock:
            if self._directory is None:
                parent = self._parent if self._parent is not None else tempfile.gettempdir()
                try:
                    made = await anyio.to_thread.run_sync(
                        lambda: tempfile.mkdtemp(prefix=".hatchway-cache-", dir=parent)
                    )
                except OSError as exc:
                    raise OutputError(
                        f"cannot create a cache directory in {parent}: {exc.strerror}"
                    ) from None
                self._directory = Path(made)
            return self._directory

    def published(self, digest: str) -> Path | None:
        entry = self._entries.get(digest)
        return entry.path if entry is not None else None

    @asynccontextmanager
    async def open(
        self, inner: BlobSource, descriptor: Descriptor
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's chunks: from the cache, or fetched from ``inner`` and teed into it."""
        digest = descriptor.digest
        while True:
            entry = self._entries.get(digest)
            if entry is None:
                break
            await entry.done.wait()
            if entry.path is not None:
                chunks = _file_chunks(entry.path, inner.description)
                try:
                    yield chunks
                finally:
                    with anyio.CancelScope(shield=True):
                        await chunks.aclose()
                return
            # That fetch failed: try again (the failed entry was removed).
        entry = self._entries[digest] = _Entry()
        try:
            directory = await self._ensure_directory()
            self.fetches += 1
            async with inner.open_blob(descriptor) as source_chunks:
                tee = _Tee(directory, descriptor)
                chunks = tee.run(source_chunks)
                try:
                    yield chunks
                finally:
                    with anyio.CancelScope(shield=True):
                        await chunks.aclose()
                        entry.path = await tee.finish()
        finally:
            if entry.path is None:
                del self._entries[digest]
            entry.done.set()


class _Tee:
    """Copies a blob's chunks into a cache file (hashing them) while they are consumed."""

    def __init__(self, directory: Path, descriptor: Descriptor) -> None:
        self._final = directory / hex_of(descriptor.digest)
        self._descriptor = descriptor
        self._hash = hashlib.sha256()
        self._size = 0
        self._fd: int | None = None
        self._temp: str | None = None
        self._complete = False

    async def run(self, chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes]:
        self._fd, self._temp = await anyio.to_thread.run_sync(
            lambda: tempfile.mkstemp(prefix=".fetch-", dir=self._final.parent)
        )
        pending: list[bytes] = []
        buffered = 0
        async for chunk in chunks:
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= CHUNK_SIZE:
                await anyio.to_thread.run_sync(self._write, b"".join(pending))
                pending, buffered = [], 0
            yield chunk
        if pending:
            await anyio.to_thread.run_sync(self._write, b"".join(pending))
        self._complete = True

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        self._hash.update(data)
        self._size += len(data)
        write_all(self._fd, data)

    async def finish(self) -> Path | None:
        """Publish the file if the whole blob was teed and checks out; else remove it."""
        return await anyio.to_thread.run_sync(self._finish)

    def _finish(self) -> Path | None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._temp is None:
            return None
        ok = (
            self._complete
            and self._size == self._descriptor.size
            and "sha256:" + self._hash.hexdigest() == self._descriptor.digest
        )
        if ok:
            os.replace(self._temp, self._final)
            return self._final
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)
        return None


async def _file_chunks(path: Path, where: str) -> AsyncGenerator[bytes]:
    try:
        file = await anyio.open_file(path, "rb")
    except OSError as exc:
        raise StoreError(where, f"cached blob {path.name}: {exc.strerror}") from None
    try:
        while chunk := await file.read(CHUNK_SIZE):
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await file.aclose()


class _CachingBlobSource:
    def __init__(self, inner: BlobSource, cache: BlobCache) -> None:
        self.inner = inner
        self.cache = cache
        self.description = inner.description
        #: A fetched remote blob is published as a file of the cache.
        self.capabilities = replace(inner.capabilities, local_files=True)

    def open_blob(
        self, descriptor: Descriptor
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        if self.inner.local_file(descriptor) is not None:
            return self.inner.open_blob(descriptor)
        return self.cache.open(self.inner, descriptor)

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        local = self.inner.local_file(descriptor)
        if local is not None:
            return local
        published = self.cache.published(descriptor.digest)
        return LocalBlob(str(published)) if published is not None else None

    def size_hint(self, descriptor: Descriptor) -> int | None:
        return self.inner.size_hint(descriptor)


class _CachingSource:
    def __init__(self, inner: Source, cache: BlobCache) -> None:
        self.inner = inner
        self.cache = cache
        self.description = inner.description
        self._wrapped: dict[int, tuple[BlobSource, _CachingBlobSource]] = {}

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        images = await self.inner.resolve(query, selection)
        return [replace(image, source=self._wrap(image.source)) for image in images]

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _wrap(self, source: BlobSource) -> BlobSource:
        known = self._wrapped.get(id(source))
        if known is None or known[0] is not source:
            known = self._wrapped[id(source)] = (source, _CachingBlobSource(source, self.cache))
        return known[1]
