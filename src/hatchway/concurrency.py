"""Concurrency helpers shared by the engine and the transports (anyio only).

* :class:`KeyedOnce` — exactly-once work per key: the keyed lock that makes a shared layer
  (or a shared config, or a manifest asked for by two names) fetched once.
* :class:`collapse_errors` — turn a task group's ``ExceptionGroup`` back into the one error
  that caused it, at the edge where callers expect a single :class:`HatchwayError`.
* :func:`gather_in_order` — run one lookup per item concurrently and report failures in the
  items' order, so the error a user sees does not depend on timing.

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
