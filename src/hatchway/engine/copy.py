"""The one copy engine: names → images → every layer moved exactly once → a destination.

``save`` is a copy into an archive destination, ``pull`` and ``load`` copies into the local
store, ``push`` a copy into a registry, ``verify`` a copy into a destination that keeps
nothing: every operation that moves images is one more destination or source, not one more
engine.  The engine acts on what sources and destinations *declare* they can do
(:class:`~hatchway.transports.base.BlobCapabilities`,
:class:`~hatchway.transports.base.DestinationCapabilities`) and never probes them.

Phases, each finished before the next starts:

1. **resolve** every query with its source (concurrently; errors reported in name order) and
   **assemble** the copy plan (pure: images in first-mention order, each once);
2. **move** every layer in one task group: one task per image layer, keyed (by the
   destination's :class:`~hatchway.transports.base.LayerForm`) so that a layer shared by many
   images moves once; at most ``jobs`` moves at a time, and a task that waits for a layer
   another task is moving holds no slot (the go-containerregistry tarball-writer deadlock:
   a fetch must never wait for its turn while holding a slot).  Small local layers going
   into an archive move in batches, one batch at a time beside those slots, and every
   worker-thread step of a move takes one of ``DECODE_THREADS`` threads (one per core);
3. **commit**: the destination writes what makes the copy visible — an archive, index
   entries, tags — only now, so on any failure before this point nothing of the copy is
   visible anywhere.

How a layer moves: if the destination holds it already, not at all; if the source has it as a
local file and the destination adopts such files (an archive written to a temp file), the
destination verifies it itself while using it; otherwise it is read (a local file in
``STEP_BYTES`` steps on worker threads, a remote stream as it arrives), hashed, decompressed
when the destination keeps layers uncompressed, verified, and written into the target the
destination opened — which keeps it only after every check passed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import IO, Generic, TypeVar, cast

import anyio
import anyio.lowlevel

from hatchway.concurrency import SPAWN_BATCH, KeyedOnce, collapse_errors
from hatchway.decode import LayerDecoder
from hatchway.engine.resolve import assemble, resolve_all
from hatchway.errors import InvalidArgument, StoreError
from hatchway.files import RegularFileReader
from hatchway.limits import DECODE_THREADS, SMALL_BATCH, SMALL_BLOB, STEP_BYTES, STREAM_CHUNK
from hatchway.model import Layer
from hatchway.progress import (
    CopyFinished,
    CopyStarted,
    LayerAdvanced,
    LayerDone,
    LayerStarted,
    ProgressCallback,
)
from hatchway.reference import ImageQuery
from hatchway.transports.base import (
    BlobSource,
    CopyContext,
    CopyPlan,
    Destination,
    DestinationCapabilities,
    LayerForm,
    LayerTarget,
    LocalBlob,
    Receiver,
    ResolvedImage,
    Selection,
    Source,
)

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CopyReport(Generic[R]):
    """What a copy did: its plan, the layers it moved, and the destination's result.

    ``layers`` counts distinct layers; ``blobs_fetched`` and ``bytes_fetched`` count the
    layers read from their source and their stored bytes (a layer the destination already
    held, or took as a local file, is not fetched).
    """

    plan: CopyPlan
    layers: int
    blobs_fetched: int
    bytes_fetched: int
    result: R


def check_jobs(jobs: object) -> None:
    """``jobs`` is a whole number of at least 1 (``True`` is no number of jobs)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidArgument("jobs", f"jobs must be a whole number of at least 1, not {jobs!r}")


async def copy(
    queries: Sequence[ImageQuery],
    source: Source,
    destination: Destination[R],
    *,
    selection: Selection,
    jobs: int,
    progress: ProgressCallback,
) -> CopyReport[R]:
    """Copy what ``queries`` name from ``source`` into ``destination``: the images (and the
    platforms and referrers ``selection`` takes).

    Raises :class:`~hatchway.errors.HatchwayError` subclasses; on any error or cancellation
    the destination is left as it was (see :class:`~hatchway.transports.base.Receiver`).
    """
    if not queries:
        raise InvalidArgument("names", "no image names given")
    check_jobs(jobs)
    resolved = await resolve_all(queries, source, selection)
    # Thousands of images: assembling them and asking for their files are a worker's job.
    plan = await anyio.to_thread.run_sync(_assembled, queries, resolved)
    declared = destination.capabilities
    form = declared.layer_form
    distinct = {form.key(la): la for la, _ in plan.blobs()}
    progress(
        CopyStarted(len(plan.images), len(distinct), sum(la.blob.size for la in distinct.values()))
    )
    async with destination.receive(plan, CopyContext(jobs, progress)) as receiver:
        mover = _Mover(receiver, declared, jobs, progress, plan.local_files)
        with collapse_errors():
            async with anyio.create_task_group() as tg:
                # Where a small layer's move is all local CPU work (into an archive), batch
                # them; a store or a registry does I/O per layer (a write, an upload): one task
                # each.
                batches = declared.batches_small_layers
                small: list[tuple[Layer, BlobSource, LocalBlob]] = []
                batched: dict[str, bool] = {}  # key -> moved in a batch (decided once)
                for started, (layer, blobs) in enumerate(plan.blobs(), 1):
                    local = plan.local_files.get(layer.blob.digest)
                    key = form.key(layer)
                    if key not in batched:
                        batched[key] = (
                            batches
                            and local is not None
                            and layer.blob.size <= SMALL_BLOB
                            and blobs.capabilities.concurrent
                        )
                        if batched[key]:
                            assert local is not None
                            small.append((layer, blobs, local))
                            if len(small) == SMALL_BATCH:
                                tg.start_soon(mover.move_small, small)
                                small = []
                    if not batched[key]:
                        tg.start_soon(mover.move, layer, blobs)
                    if started % SPAWN_BATCH == 0:
                        await anyio.lowlevel.checkpoint()
                if small:
                    tg.start_soon(mover.move_small, small)
        result = await receiver.commit()
    fetched = [n for n in [*mover.once.results().values(), *mover.small_fetched] if n]
    progress(CopyFinished(len(fetched), sum(fetched)))
    return CopyReport(plan, len(distinct), len(fetched), sum(fetched), result)


def _assembled(
    queries: Sequence[ImageQuery], resolved: Sequence[Sequence[ResolvedImage]]
) -> CopyPlan:
    return _with_local_files(assemble(queries, resolved))


def _with_local_files(plan: CopyPlan) -> CopyPlan:
    """The plan, with each layer's local file as its (first) source describes it."""
    local_files: dict[str, LocalBlob] = {}
    for layer, source in plan.blobs():
        if source.capabilities.local_files and layer.blob.digest not in local_files:
            local = source.local_file(layer.blob)
            if local is not None:
                local_files[layer.blob.digest] = local
    return replace(plan, local_files=local_files)


class _Mover:
    """The layer moves of one copy: each key once, at most ``jobs`` at a time."""

    def __init__(
        self,
        receiver: Receiver[object],
        declared: DestinationCapabilities,
        jobs: int,
        progress: ProgressCallback,
        local_files: Mapping[str, LocalBlob],
    ) -> None:
        self.receiver = receiver
        self.declared = declared
        self.local_files = local_files
        #: The stored bytes each batched move of a small local layer read.
        self.small_fetched: list[int] = []
        self.form = declared.layer_form
        self.progress = progress
        self.slots = anyio.CapacityLimiter(jobs)
        #: Batches of small layers are Python-heavy CPU work: run one at a time, beside the
        #: ``jobs`` slots.  More threads would only contend for the GIL (measured slower with
        #: every added thread) and delay the event loop.
        self.batch_slot = anyio.CapacityLimiter(1)
        #: Worker threads decoding layers at once (``limits.DECODE_THREADS``).
        self.threads = anyio.CapacityLimiter(DECODE_THREADS)
        #: Per key: the stored bytes fetched from the source (0: nothing had to be fetched).
        self.once: KeyedOnce[str, int] = KeyedOnce()
        #: One read at a time from each source that cannot serve blobs concurrently.
        self._serial: dict[int, tuple[BlobSource, anyio.Lock]] = {}

    async def _holds(self, layer: Layer) -> bool:
        return self.declared.holds_layers and await self.receiver.has_layer(layer)

    async def _adopts(self, layer: Layer, local: LocalBlob | None, source: BlobSource) -> bool:
        return (
            local is not None
            and self.declared.adopts_local_files
            and await self.receiver.adopt_file(layer, local, source.description)
        )

    def _reading(self, source: BlobSource) -> AbstractAsyncContextManager[object]:
        """Held while a blob of ``source`` is read: a lock of its own if it reads one blob
        at a time (``capabilities.concurrent`` false), else nothing."""
        if source.capabilities.concurrent:
            return nullcontext()
        known = self._serial.get(id(source))
        if known is None or known[0] is not source:
            known = self._serial[id(source)] = (source, anyio.Lock())
        return known[1]

    async def _in_thread(self, function: Callable[..., R], *args: object) -> R:
        return await anyio.to_thread.run_sync(function, *args, limiter=self.threads)

    async def move(self, layer: Layer, source: BlobSource) -> None:
        await self.once.run(self.form.key(layer), lambda: self._move_new(layer, source))

    async def _move_new(self, layer: Layer, source: BlobSource) -> int:
        key = self.form.key(layer)
        local = self.local_files.get(layer.blob.digest)
        if await self._holds(layer) or await self._adopts(layer, local, source):
            self.progress(LayerStarted(key, layer.blob.size))
            self.progress(LayerDone(key, layer.blob.size))
            return 0
        async with self.slots:
            self.progress(LayerStarted(key, layer.blob.size))
            target = await self.receiver.open_layer(layer)
            try:
                async with self._reading(source):
                    size = await self._decode(key, layer, source, local, target)
                await target.commit(size)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await target.discard()
                raise
            self.progress(LayerDone(key, size))
        return layer.blob.size

    async def move_small(self, batch: list[tuple[Layer, BlobSource, LocalBlob]]) -> None:
        """Move many small local layers with one worker-thread call: for the thousands of
        tiny layers of a big save, one thread hand-off each would cost more than the work."""
        todo: list[tuple[Layer, Callable[[], LayerDecoder], LocalBlob, LayerTarget]] = []
        async with self.batch_slot:
            try:
                for layer, source, local in batch:
                    key = self.form.key(layer)
                    self.progress(LayerStarted(key, layer.blob.size))
                    if await self._holds(layer) or await self._adopts(layer, local, source):
                        self.progress(LayerDone(key, layer.blob.size))
                        continue
                    target = await self.receiver.open_layer(layer)
                    # Built on the worker, one at a time: an inflater holds ~40 KiB.
                    decoder = partial(self._decoder, layer, target, source)
                    todo.append((layer, decoder, local, target))
                jobs = [(decoder, local) for _, decoder, local, _ in todo]
                sizes = await self._in_thread(_decode_batch, jobs)
                for size in sizes:
                    layer, _, _, target = todo[0]
                    await target.commit(size)
                    del todo[0]  # committed: no longer ours to discard
                    key = self.form.key(layer)
                    self.progress(LayerAdvanced(key, layer.blob.size))
                    self.progress(LayerDone(key, size))
                    self.small_fetched.append(layer.blob.size)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    for *_, target in todo:
                        await target.discard()
                raise

    def _decoder(self, layer: Layer, target: LayerTarget, source: BlobSource) -> LayerDecoder:
        """The decoder that verifies ``layer`` into ``target``, in the destination's form."""
        return LayerDecoder(
            layer,
            cast(IO[bytes], target),
            store=source.description,
            decompress=self.form is LayerForm.UNCOMPRESSED,
        )

    async def _decode(
        self,
        key: str,
        layer: Layer,
        source: BlobSource,
        local: LocalBlob | None,
        target: LayerTarget,
    ) -> int:
        decoder = self._decoder(layer, target, source)
        if local is not None and layer.blob.size <= SMALL_BLOB:
            # A small file is read, verified and written in one worker-thread call.
            size = await self._in_thread(_decode_small, decoder, local)
            self.progress(LayerAdvanced(key, layer.blob.size))
            return size
        if local is not None:
            file = await self._in_thread(_open_blob_file, local, source.description)
            # A range ends where the blob does; a whole file is read to its end, so that a file
            # longer than its descriptor is caught.
            end = local.size
            try:
                # A core no other step is using: inflate and hash on two threads this step.
                while n := await self._in_thread(
                    partial(decoder.feed_file, split=self.threads.available_tokens >= 2),
                    cast(IO[bytes], file),
                    STEP_BYTES if end is None else min(STEP_BYTES, end - decoder.consumed),
                    anyio.from_thread.check_cancelled,
                ):
                    self.progress(LayerAdvanced(key, n))
            finally:
                with anyio.CancelScope(shield=True):
                    await self._in_thread(file.close)
        else:
            pending: list[bytes] = []
            buffered = 0
            async with source.open_blob(layer.blob) as chunks:
                async for chunk in chunks:
                    pending.append(chunk)
                    buffered += len(chunk)
                    if buffered >= STREAM_CHUNK:  # small hand-offs: little held per fetch
                        await self._in_thread(decoder.feed, b"".join(pending))
                        self.progress(LayerAdvanced(key, buffered))
                        pending, buffered = [], 0
            if pending:
                await self._in_thread(decoder.feed, b"".join(pending))
                self.progress(LayerAdvanced(key, buffered))
        return await self._in_thread(decoder.finish)


def _decode_batch(jobs: list[tuple[Callable[[], LayerDecoder], LocalBlob]]) -> list[int]:
    sizes = []
    for make_decoder, local in jobs:
        anyio.from_thread.check_cancelled()
        sizes.append(_decode_small(make_decoder(), local))
    return sizes


def _decode_small(decoder: LayerDecoder, local: LocalBlob) -> int:
    file = _open_blob_file(local, decoder.store)
    try:
        end = local.size if local.size is not None else decoder.layer.blob.size + 1
        decoder.feed_file(cast(IO[bytes], file), end)
    finally:
        file.close()
    return decoder.finish()


def _open_blob_file(local: LocalBlob, store: str) -> RegularFileReader:
    """The local blob (a file, or a range of one), opened without blocking: a FIFO or a
    device in its place is refused (:func:`hatchway.files.open_regular`), and reading stops
    at the end the file had when it was opened."""
    try:
        return RegularFileReader(local.path, local.offset, local.size)
    except FileNotFoundError:
        raise StoreError(store, f"blob file {local.path} not found") from None
    except OSError as exc:
        raise StoreError(store, f"{local.path}: {exc.strerror or exc}") from None
