"""Concurrency helpers shared by the engine and the transports (anyio only).

* :class:`KeyedOnce` — exactly-once work per key: the keyed lock that makes a shared layer
  (or a shared config, or a manifest asked for by two names) fetched once.
* :class:`collapse_errors` — turn a task group's ``ExceptionGroup`` back into the one error
  that caused it, at the edge where callers expect a single :class:`HatchwayError`.
* :func:`gather_in_order` — run one lookup per item concurrently and report failures in the
  items' order, so the error a user sees does not depend on timing.
* :class:`BatchedCalls` — a blocking function called by many tasks at once, run for all of
  them in few worker-thread calls (a thread hand-off costs more than reading a small file).

``KeyedOnce``: the first caller for a key runs the work; callers that arrive while it runs
wait for its result without holding anything (in particular, not a fetch slot).  If the work
fails, the key is forgotten and the error propagates to the first caller only; a waiter then
retries itself.  Inside a task group the first failure cancels the waiters anyway, so failed
work is never repeated within one save.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from hatchway.errors import HatchwayError

#: Tasks started between two checkpoints, so that starting thousands of them (one per layer of
#: a thousand images) never holds the event loop for long.
SPAWN_BATCH = 64

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
A = TypeVar("A")


class _Pending:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = anyio.Event()


class KeyedOnce(Generic[K, V]):
    """Run ``work`` once per key and share its result with every caller."""

    def __init__(self) -> None:
        self._results: dict[K, V] = {}
        self._pending: dict[K, _Pending] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        while True:
            if key in self._results:
                return self._results[key]
            pending = self._pending.get(key)
            if pending is None:
                break
            await pending.done.wait()
        pending = self._pending[key] = _Pending()
        try:
            value = await work()
            self._results[key] = value
            return value
        finally:
            del self._pending[key]
            pending.done.set()

    def results(self) -> dict[K, V]:
        """A copy of the finished results, by key."""
        return dict(self._results)


async def gather_in_order(
    items: Sequence[T], work: Callable[[T], Awaitable[V]], *, limit: int
) -> list[V]:
    """``[await work(item) for item in items]``, at most ``limit`` at once.

    Every item is tried; if any raised a :class:`HatchwayError`, the one of the earliest item
    is raised (other exceptions propagate as soon as they happen).
    """
    results: list[tuple[V] | HatchwayError | None] = [None] * len(items)
    limiter = anyio.CapacityLimiter(limit)

    async def one(i: int, item: T) -> None:
        async with limiter:
            try:
                results[i] = (await work(item),)
            except HatchwayError as exc:
                results[i] = exc

    with collapse_errors():
        async with anyio.create_task_group() as tg:
            for i, item in enumerate(items):
                tg.start_soon(one, i, item)
                if i % SPAWN_BATCH == SPAWN_BATCH - 1:
                    await anyio.lowlevel.checkpoint()  # thousands of spawns: let the loop run
    done: list[V] = []
    for result in results:
        if isinstance(result, HatchwayError):
            raise result
        assert result is not None
        done.append(result[0])
    return done


class collapse_errors:
    """Turn a task group's ``ExceptionGroup`` back into the one error that caused it.

    The first :class:`HatchwayError` wins (then any other ``Exception``); groups holding
    ``BaseException``\\ s such as ``KeyboardInterrupt`` propagate unchanged.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if not isinstance(exc, BaseExceptionGroup):
            return
        leaves = list(_leaves(exc))
        if any(not isinstance(e, Exception) for e in leaves):
            return
        chosen = next((e for e in leaves if isinstance(e, HatchwayError)), leaves[0])
        raise chosen from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            out.extend(_leaves(e))
        else:
            out.append(e)
    return out


class _Call(Generic[A, V]):
    __slots__ = ("argument", "done", "error", "value", "wake")

    def __init__(self, argument: A) -> None:
        self.argument = argument
        self.done = False
        self.value: V | None = None
        self.error: BaseException | None = None
        self.wake: anyio.Event | None = None


class BatchedCalls(Generic[A, V]):
    """``await calls(argument)`` is ``function(argument)`` run on a worker thread, but calls
    made while one worker call is running are collected and run together in the next one.

    For many tiny blocking jobs (reading a thousand small documents) the thread hand-off is
    the cost, not the job.  The first caller that finds no worker call running starts one
    with everything queued and wakes each caller as its result is ready; when it finishes,
    the first of the callers queued meanwhile starts the next.  A caller cancelled while
    queued leaves the queue (and hands the next batch on if it was to start it); one
    cancelled while its batch runs is answered by nobody (its job still runs, harmlessly).
    Each caller gets its own result or exception.  Run only quick jobs: a batch is not
    interrupted by cancellation.
    """

    def __init__(self, function: Callable[[A], V]) -> None:
        self._function = function
        self._queue: list[_Call[A, V]] = []
        self._running = False

    async def __call__(self, argument: A) -> V:
        call: _Call[A, V] = _Call(argument)
        self._queue.append(call)
        try:
            while not call.done:
                if self._running:
                    call.wake = anyio.Event()
                    await call.wake.wait()
                else:
                    await self._run_batch()
        except BaseException:
            if call in self._queue:
                self._queue.remove(call)
            self._hand_over()
            raise
        if call.error is not None:
            raise call.error
        return call.value  # type: ignore[return-value]  # V itself may include None

    async def _run_batch(self) -> None:
        self._running = True
        batch, self._queue = self._queue, []
        try:
            await anyio.to_thread.run_sync(self._run_each, batch)
        finally:
            # The worker call may not have run at all (its starter was cancelled while
            # waiting for a thread): what did not run goes back to the front of the queue.
            self._running = False
            self._queue[:0] = [call for call in batch if not call.done]
            for call in batch:
                if call.wake is not None and call.done:
                    call.wake.set()
            self._hand_over()

    def _run_each(self, batch: list[_Call[A, V]]) -> None:
        for call in batch:
            try:
                call.value = self._function(call.argument)
            except Exception as exc:  # handed to its caller
                call.error = exc
            call.done = True  # read by the event loop only once this worker call returned

    def _hand_over(self) -> None:
        if not self._running and self._queue and self._queue[0].wake is not None:
            self._queue[0].wake.set()
