"""A big blob over several connections — but only connections nobody else is waiting for.

A registry usually limits each connection, not the link, so one big layer fetched in one
request takes far longer than the link needs.  Splitting every big blob into fixed ranges up
front is no answer either: when several big blobs start together the extra ranges queue for
connections behind the other blobs' first requests, and the blobs whose ranges waited finish
last.  So a blob is split only while a connection is idle:

* a big blob starts as one request for all of it (its *first part*, which the consumer
  reads as it arrives);
* beside it, a few helpers wait for a **spare** connection slot — one that is free while no
  other request waits (:class:`Slots`);  a helper that gets one takes the back half of the
  part with the most bytes still to come (:meth:`Spool.split`), fetches it into a temp file
  and, if the blob still has a big remainder, does it again;
* the part that was cut stops at the cut: its request asked for more, and its connection is
  dropped when it gets there.

Parts only shrink at the end that nobody has read yet (:attr:`Part.claimed` counts bytes
taken, including those still being written), so every byte of the blob is fetched once,
by exactly one part, whatever the timing.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio


class Slots:
    """A registry host's connection slots.  Requests (:meth:`hold`) queue for them in order;
    spare-time work (:meth:`spare`) only takes a slot that stays free once every waiting
    request has one."""

    def __init__(self, count: int) -> None:
        self._limiter = anyio.CapacityLimiter(count)
        self._waiting = 0
        self._freed = anyio.Event()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """One slot for the block (waiting in order for it)."""
        self._waiting += 1
        try:
            await self._limiter.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self.release()

    async def spare(self, wanted: Callable[[], bool]) -> bool:
        """Take a slot nobody else waits for, as soon as there is one, and return True — or
        return False (holding nothing) once ``wanted()`` is false.  A taken slot is given back
        with :meth:`release`, by the same task."""
        while wanted():
            # Spare: free even once every request waiting (or just acquiring) has its slot.
            if self._limiter.available_tokens > self._waiting:
                self._limiter.acquire_nowait()
                return True
            await self._freed.wait()
        return False

    def release(self) -> None:
        self._limiter.release()
        self._freed.set()
        self._freed = anyio.Event()

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return int(self._limiter.borrowed_tokens)


@dataclass(slots=True)
class Part:
    """Bytes ``start`` to ``end`` of the blob, fetched by one request at a time.  ``end``
    shrinks when the part is split; ``claimed`` bytes (from ``start``) are taken by its
    fetcher, ``filled`` of them are in the temp file (for the parts after the first)."""

    start: int
    end: int
    claimed: int = 0
    filled: int = 0

    @property
    def unclaimed(self) -> int:
        return self.end - self.start - self.claimed


class Spool:
    """The parts of one blob, in order, and the temp file (``fd``) the later ones land in."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts = [Part(0, size)]
        self.fd: int | None = None
        self.file_lock = anyio.Lock()
        self.flowing = anyio.Event()  # the first part's bytes arrive
        self._moved = anyio.Event()

    @property
    def first(self) -> Part:
        return self.parts[0]

    def _widest(self) -> Part:
        return max(self.parts, key=lambda p: p.unclaimed)

    def splittable(self, min_half: int) -> bool:
        """Whether some part has at least twice ``min_half`` bytes still to come."""
        return self._widest().unclaimed >= 2 * min_half

    def split(self, min_half: int) -> Part | None:
        """Cut the part with the most bytes still to come in two and return the back half
        (to be fetched by the caller), or None when no part has ``2 * min_half`` to come."""
        widest = self._widest()
        rest = widest.unclaimed
        if rest < 2 * min_half:
            return None
        cut = widest.end - rest // 2
        back = Part(cut, widest.end)
        widest.end = cut
        bisect.insort(self.parts, back, key=lambda p: p.start)
        return back

    def after(self, offset: int) -> Part:
        """The part that starts at ``offset`` (a part's end is always the next one's start)."""
        index = bisect.bisect_left(self.parts, offset, key=lambda p: p.start)
        part = self.parts[index]
        assert part.start == offset, (offset, self.parts)
        return part

    def changed(self) -> None:
        self._moved.set()
        self._moved = anyio.Event()

    async def wait(self) -> None:
        """Until a part moves on (more bytes filled)."""
        await self._moved.wait()
