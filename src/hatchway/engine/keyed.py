"""Exactly-once work per key: the keyed lock that makes a shared layer staged once.

The first caller for a key runs the work; callers that arrive while it runs wait for its
result without holding anything (in particular, not a fetch slot).  If the work fails, the
key is forgotten and the error propagates to the first caller only; a waiter then retries
itself.  Inside a task group the first failure cancels the waiters anyway, so a failed layer is
never fetched twice in one save.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K")
V = TypeVar("V")


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
