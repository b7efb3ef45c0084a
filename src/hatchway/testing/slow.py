"""Source wrappers for tests and benchmarks: a slow (network-like) store and a counting one.

Both *compose* around any :class:`~hatchway.transports.base.Source` (wrappers, not subclass
towers).  ``resolve`` delegates to the inner source and re-wraps the
:class:`~hatchway.transports.base.BlobSource` of every image it returns, so the engine reads
all blobs through the wrapper::

    store = CountingStore(SlowStore(OCILayoutStore(root), latency=0.05, bandwidth=20e6))
    await hatchway.save(names, out, store=store, jobs=8)
    assert max(store.opens.values()) == 1      # every blob fetched exactly once

* :class:`SlowStore` / :class:`SlowBlobSource` add a fixed latency before the first byte of
  every blob and cap each blob stream to a bandwidth (per stream, not shared: a registry that
  serves many connections at once behaves like this).  They also hide ``local_file()``, so the
  engine must stream blobs as it would from a registry.
* :class:`CountingStore` / :class:`CountingBlobSource` count ``open_blob()`` (and
  ``local_file()``) calls per digest, to prove shared blobs are fetched once.

Only anyio is used (``anyio.sleep``, ``anyio.current_time``), so both wrappers run under
asyncio and trio.  Neither verifies anything: digests remain the engine's job.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio

from hatchway.model import Descriptor
from hatchway.reference import ImageQuery
from hatchway.transports.base import BlobSource, LocalBlob, ResolvedImage, Selection, Source

__all__ = ["CountingBlobSource", "CountingStore", "SlowBlobSource", "SlowStore"]

_Wrap = Callable[[BlobSource], BlobSource]


class SlowBlobSource:
    """A :class:`BlobSource` that serves ``inner``'s blobs late and slowly, never as files.

    ``latency`` seconds pass between :meth:`open_blob` being entered and the stream being
    handed over (the time to first byte).  With ``bandwidth`` (bytes per second), each stream
    is paced so that its first *n* bytes are not delivered before ``n / bandwidth`` seconds
    after the stream started; each stream has its own budget, so concurrent streams add up.
    Chunks are passed through as the inner source yields them, so pacing is per chunk
    (``CHUNK_SIZE``, 1 MiB, for the built-in stores).
    """

    def __init__(self, inner: BlobSource, latency: float, bandwidth: float | None) -> None:
        if latency < 0:
            raise ValueError(f"latency must not be negative, not {latency}")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive, not {bandwidth}")
        self.inner = inner
        self.latency = latency
        self.bandwidth = bandwidth
        self.description = inner.description
        #: A remote store's stand-in: no local files.
        self.capabilities = dataclasses.replace(inner.capabilities, local_files=False)

    @asynccontextmanager
    async def open_blob(self, descriptor: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """``inner.open_blob(descriptor)``, after ``latency`` and paced to ``bandwidth``.

        Raises whatever the inner source raises, when it raises it.
        """
        await anyio.sleep(self.latency)
        async with self.inner.open_blob(descriptor) as chunks:
            yield self._paced(chunks)

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        """Always ``None``: a slow source stands in for a remote one, which has no files."""
        return None

    def size_hint(self, descriptor: Descriptor) -> int | None:
        """The inner source's hint."""
        return self.inner.size_hint(descriptor)

    async def _paced(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if self.bandwidth is None:
            async for chunk in chunks:
                yield chunk
            return
        start = anyio.current_time()
        sent = 0
        async for chunk in chunks:
            sent += len(chunk)
            delay = start + sent / self.bandwidth - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)
            yield chunk


class SlowStore:
    """A :class:`Source` whose images serve their blobs through :class:`SlowBlobSource`.

    Resolution itself is not slowed: the benchmarks measure fetching, and a registry's
    manifest round trips are a separate concern.
    """

    def __init__(self, inner: Source, latency: float, bandwidth: float | None = None) -> None:
        self.inner = inner
        self.latency = latency
        self.bandwidth = bandwidth
        self.description = inner.description
        self._sources = _Wrappers(lambda source: SlowBlobSource(source, latency, bandwidth))

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        """``inner.resolve``, with every image's blob source wrapped.  Raises as ``inner``."""
        return self._sources.rewrap(await self.inner.resolve(query, selection))

    async def aclose(self) -> None:
        """Close the inner store."""
        await self.inner.aclose()


class CountingBlobSource:
    """A :class:`BlobSource` that counts, per digest, how often each blob is asked for.

    ``opens`` counts :meth:`open_blob` calls (counted on entry, before the inner source can
    fail); ``locates`` counts :meth:`local_file` calls that found a file.  The counters may be
    shared between sources (as :class:`CountingStore` does) so that one tally covers a save.
    A fetch of a local blob goes through ``local_file`` and never ``open_blob``; wrap a
    :class:`SlowStore` (which hides files) to force every fetch through ``open_blob``.
    """

    def __init__(
        self,
        inner: BlobSource,
        opens: Counter[str] | None = None,
        locates: Counter[str] | None = None,
    ) -> None:
        self.inner = inner
        self.opens: Counter[str] = opens if opens is not None else Counter()
        self.locates: Counter[str] = locates if locates is not None else Counter()
        self.description = inner.description
        self.capabilities = inner.capabilities

    def open_blob(
        self, descriptor: Descriptor
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Count, then delegate.  Raises as the inner source."""
        self.opens[descriptor.digest] += 1
        return self.inner.open_blob(descriptor)

    def local_file(self, descriptor: Descriptor) -> LocalBlob | None:
        """Delegate; a file handed out counts in ``locates``."""
        local = self.inner.local_file(descriptor)
        if local is not None:
            self.locates[descriptor.digest] += 1
        return local

    def size_hint(self, descriptor: Descriptor) -> int | None:
        """Delegate."""
        return self.inner.size_hint(descriptor)


class CountingStore:
    """A :class:`Source` whose images' blob sources count fetches into shared tallies.

    ``opens`` and ``locates`` (see :class:`CountingBlobSource`) cover every image this store
    resolved, whichever inner source serves it.
    """

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.description = inner.description
        self.opens: Counter[str] = Counter()
        self.locates: Counter[str] = Counter()
        self._sources = _Wrappers(
            lambda source: CountingBlobSource(source, self.opens, self.locates)
        )

    def fetches(self, digest: str) -> int:
        """How many times the blob ``digest`` was opened or located."""
        return self.opens[digest] + self.locates[digest]

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        """``inner.resolve``, with every image's blob source wrapped.  Raises as ``inner``."""
        return self._sources.rewrap(await self.inner.resolve(query, selection))

    async def aclose(self) -> None:
        """Close the inner store."""
        await self.inner.aclose()


class _Wrappers:
    """One wrapper per inner blob source, so images that shared a source still share one."""

    def __init__(self, wrap: _Wrap) -> None:
        self._wrap = wrap
        self._by_inner: dict[int, tuple[BlobSource, BlobSource]] = {}

    def rewrap(self, images: list[ResolvedImage]) -> list[ResolvedImage]:
        return [dataclasses.replace(image, source=self._get(image.source)) for image in images]

    def _get(self, inner: BlobSource) -> BlobSource:
        # Keyed by identity (sources need not be hashable); the stored ``inner`` keeps the id
        # from being reused by another object.
        found = self._by_inner.get(id(inner))
        if found is None:
            found = (inner, self._wrap(inner))
            self._by_inner[id(inner)] = found
        return found[1]
