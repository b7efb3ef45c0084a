"""BatchedCalls: many callers, few worker-thread calls, each caller its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest

from hatchway.concurrency import BatchedCalls

pytestmark = pytest.mark.anyio


blocked = anyio.wait_all_tasks_blocked


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, which a worker thread makes true: no task to wait for, and a
    thread cannot set an ``anyio.Event`` (nor borrow one: the tests here hold them all)."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)


class Recorder:
    """A blocking function (doubling its argument, refusing negatives) that counts the worker
    calls it was run in; ``gate`` holds every call until it is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.threads: list[int] = []

    def __call__(self, n: int) -> int:
        self.threads.append(threading.get_ident())
        self.gate.wait(5)
        if n < 0:
            raise ValueError(f"negative {n}")
        return n * 2


def batched(recorder: Recorder) -> tuple[BatchedCalls[int, int], list[list[int]]]:
    """BatchedCalls around ``recorder``, and the arguments of each worker call it makes."""
    calls: BatchedCalls[int, int] = BatchedCalls(recorder)
    batches: list[list[int]] = []
    run_each = calls._run_each

    def recording(batch: list) -> None:  # type: ignore[type-arg]
        batches.append([call.argument for call in batch])
        run_each(batch)

    calls._run_each = recording  # type: ignore[method-assign]
    return calls, batches


class Held:
    """BatchedCalls whose worker calls wait for ``recorder.gate``; ``ask`` records results."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.calls, self.batches = batched(self.recorder)
        self.recorder.gate.clear()
        self.results: dict[int, int] = {}

    async def ask(self, n: int) -> None:
        self.results[n] = await self.calls(n)


async def test_results_reach_their_callers_in_few_worker_calls() -> None:
    recorder = Recorder()
    calls, batches = batched(recorder)
    results: dict[int, int] = {}

    async def ask(n: int) -> None:
        results[n] = await calls(n)

    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(ask, n)
    assert results == {n: n * 2 for n in range(200)}
    assert threading.get_ident() not in recorder.threads  # never on the event loop's thread
    assert sorted(n for batch in batches for n in batch) == list(range(200))
    assert len(batches) <= 10  # 200 callers, a handful of thread hand-offs


async def test_calls_made_while_a_batch_runs_share_the_next_batch() -> None:
    recorder = Recorder()
    calls, batches = batched(recorder)
    recorder.gate.clear()
    async with anyio.create_task_group() as tg:
        tg.start_soon(calls, 0)
        await blocked()  # the first batch is running, held by the gate
        for n in range(1, 50):
            tg.start_soon(calls, n)
        await blocked()
        recorder.gate.set()
    assert len(batches) == 2 and batches[0] == [0]
    assert sorted(batches[1]) == list(range(1, 50))  # trio starts tasks in random order


async def test_each_caller_gets_its_own_exception() -> None:
    calls, _ = batched(Recorder())
    outcomes: dict[int, object] = {}

    async def ask(n: int) -> None:
        try:
            outcomes[n] = await calls(n)
        except ValueError as exc:
            outcomes[n] = str(exc)

    async with anyio.create_task_group() as tg:
        for n in (-1, 1, -2, 2):
            tg.start_soon(ask, n)
    assert outcomes == {-1: "negative -1", 1: 2, -2: "negative -2", 2: 4}


async def test_a_cancelled_queued_caller_leaves_and_does_not_stall_the_others() -> None:
    h = Held()

    async with anyio.create_task_group() as tg:
        tg.start_soon(h.ask, 1)  # leads the first batch, held by the gate
        await blocked()
        with anyio.move_on_after(0.05) as scope:
            await h.calls(2)  # queued behind the running batch, then cancelled
        assert scope.cancelled_caught
        tg.start_soon(h.ask, 3)
        await blocked()
        h.recorder.gate.set()
    assert h.results == {1: 2, 3: 6}
    assert h.batches == [[1], [3]]  # the cancelled call left the queue


async def test_the_first_queued_caller_cancelled_hands_the_next_batch_on() -> None:
    h = Held()

    async with anyio.create_task_group() as tg:
        tg.start_soon(h.ask, 1)
        await blocked()
        first_queued = anyio.CancelScope()

        async def queued() -> None:
            with first_queued:
                await h.calls(2)

        tg.start_soon(queued)
        await blocked()
        tg.start_soon(h.ask, 3)
        await blocked()
        first_queued.cancel()
        await blocked()
        h.recorder.gate.set()
    assert h.results == {1: 2, 3: 6} and h.batches == [[1], [3]]


async def test_a_cancelled_leader_answers_its_batch_and_hands_the_queue_on() -> None:
    h = Held()

    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                h.results[1] = await h.calls(1)
                await anyio.sleep(1)  # where the cancellation lands

        tg.start_soon(lead)
        await blocked()
        tg.start_soon(h.ask, 2)  # queued behind the leader's batch
        await blocked()
        leader.cancel()  # a worker call is not interrupted: the leader waits for it
        await blocked()
        h.recorder.gate.set()
    assert leader.cancelled_caught
    assert h.results == {1: 2, 2: 4} and h.batches == [[1], [2]]


async def test_a_leader_cancelled_before_its_worker_call_ran_leaves_the_calls_queued() -> None:
    """When every worker thread is taken, the caller that starts the next batch waits for
    one; if it is cancelled then, nothing of its batch ran, and the callers queued with it
    must still get their own results (not ``None``), from a batch one of them starts."""
    h = Held()
    limiter = anyio.to_thread.current_default_thread_limiter()
    blocker = threading.Event()
    saved = limiter.total_tokens
    try:
        async with anyio.create_task_group() as tg:
            limiter.total_tokens = 2
            tg.start_soon(anyio.to_thread.run_sync, blocker.wait, 5)  # one thread taken
            tg.start_soon(h.ask, 0)  # the first batch takes the other, held by the gate
            await until(lambda: limiter.borrowed_tokens == 2)
            leader = anyio.CancelScope()

            async def lead() -> None:
                with leader:
                    await h.calls(1)

            tg.start_soon(lead)  # queued first: it will start the next batch, [1, 2]
            await blocked()
            tg.start_soon(h.ask, 2)
            await blocked()
            limiter.total_tokens = 1  # once the first batch's thread returns, none is free
            h.recorder.gate.set()
            await until(lambda: 0 in h.results)
            await blocked()  # batch [1, 2] now waits for a thread
            leader.cancel()
            await blocked()
            blocker.set()
    finally:
        limiter.total_tokens = saved
    assert leader.cancelled_caught
    assert h.results == {0: 0, 2: 4}
    assert h.batches == [[0], [2]]  # [1, 2] never ran; 2 ran in the batch after
