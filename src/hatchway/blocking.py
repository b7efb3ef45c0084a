"""Blocking calls on worker threads that a cancellation still ends.

A blocking call runs on a worker thread (``anyio.to_thread.run_sync``), and cancelling the
task that waits for it does not stop the thread: unless the call ends by itself, the task
waits for it, and a Ctrl-C or a SIGTERM is not acted on.  Most calls end by themselves (a
read of a regular file, a write into one).  Those that can wait without bound — for a lock
another process holds, for a program that does not exit, for a reader that does not read —
are made to end in one of two ways:

* **They wait in short steps and look for cancellation between them** (:func:`checkpoint`,
  which raises the waiting task's cancellation in the thread): :func:`lock_exclusive` tries
  the ``flock`` again every few milliseconds, :func:`run_program` watches its child's output
  and exit in steps of ``POLL_INTERVAL``, and kills it when cancelled, when it runs too long
  or when it prints more than it may.  Nothing they guard happens after the cancellation.
* **They cannot be cut, so they are abandoned** (``abandon_on_cancel=True``): a write into a
  pipe, a FIFO, a socket or a device blocks until the reader takes the bytes, and no
  timeout can end it.  :class:`Abandonable` makes abandoning one safe: the thread writes
  through duplicates of the descriptors it needs, made under a lock while the writes are not
  yet stopped, so that closing a descriptor afterwards can never hand its number to another
  file while an abandoned write still uses it; and after :meth:`Abandonable.stop` the
  thread does nothing more than finish the one system call it was in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import anyio
import anyio.from_thread

from hatchway.files import KernelCopy

P = ParamSpec("P")
R = TypeVar("R")

#: The longest a thread waits before it looks for cancellation again: a stop signal takes
#: effect within this much (the waits are for other processes, so a few more wake-ups a
#: second cost nothing).
POLL_INTERVAL = 0.02


def checkpoint() -> None:
    """Raise the cancellation of the task waiting for this worker thread, if it was
    cancelled.  A no-op on a thread anyio did not start (a blocking caller of its own)."""
    try:
        anyio.from_thread.check_cancelled()
    except RuntimeError:  # not an anyio worker thread: no task to take a cancellation from
        return


def lock_exclusive(fd: int) -> None:
    """Blocking: take an exclusive ``flock`` on ``fd``, waiting as long as another process
    holds it — but giving up, by raising the waiting task's cancellation, within
    ``POLL_INTERVAL`` of it being cancelled.  Raises :class:`OSError` as ``flock`` does."""
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return
        checkpoint()
        time.sleep(delay)
        delay = min(delay * 2, POLL_INTERVAL)


class ProgramError(Exception):
    """A program run by :func:`run_program` could not run, ran too long or printed too much
    (``reason`` says which, in words fit for an error line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Finished:
    """How a program ended: its exit status and what it printed."""

    returncode: int
    stdout: bytes
    stderr: bytes


def run_program(
    argv: Sequence[str], stdin: bytes, *, timeout: float, output_limit: int
) -> Finished:
    """Blocking: run ``argv`` with ``stdin`` as its input; return how it ended.

    Its output is read as it comes, at most ``output_limit`` bytes on each of stdout and
    stderr: a program that prints more, or that has not ended after ``timeout`` seconds, is
    killed (:class:`ProgramError`), and so is one whose task is cancelled (the cancellation
    is raised within ``POLL_INTERVAL``).  However this ends, the program has exited.  Raises
    :class:`ProgramError` when it cannot be started.
    """
    deadline = time.monotonic() + timeout
    try:
        child = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise ProgramError(f"cannot run: {exc.strerror or exc}") from None
    try:
        _give_input(child, stdin)
        out, err = _collect(child, deadline, output_limit)
        while child.poll() is None:
            _wait_step(deadline)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        return Finished(child.returncode, out, err)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _give_input(child: subprocess.Popen[bytes], data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it (a child that exits without reading
    it is not an error: its exit status says what happened)."""
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        child.stdin.write(data)  # a few bytes: far below what a pipe holds
        child.stdin.flush()
    with contextlib.suppress(BrokenPipeError):
        child.stdin.close()


def _collect(child: subprocess.Popen[bytes], deadline: float, limit: int) -> tuple[bytes, bytes]:
    """Read the child's stdout and stderr until both are closed, in steps."""
    assert child.stdout is not None
    assert child.stderr is not None
    buffers = {child.stdout.fileno(): bytearray(), child.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = _wait_step(deadline)
            for key, _ in selector.select(min(POLL_INTERVAL, remaining)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer = buffers[key.fd]
                if len(buffer) + len(chunk) > limit:
                    raise ProgramError(f"printed more than {limit} bytes")
                buffer += chunk
    return bytes(buffers[child.stdout.fileno()]), bytes(buffers[child.stderr.fileno()])


def _wait_step(deadline: float) -> float:
    """Before each step of a wait: raise a cancellation, or :class:`ProgramError` once the
    deadline passed; return the seconds left."""
    checkpoint()
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ProgramError("timed out")
    return remaining


class Stopped(Exception):
    """The writes of an :class:`Abandonable` were stopped: the thread gives up."""


class Abandonable:
    """Writes into descriptors, on worker threads that a cancellation abandons.

    :meth:`run` runs a blocking function with ``abandon_on_cancel=True``; the function uses
    the descriptors it needs through :meth:`borrow` (a duplicate, made only while the writes
    are not stopped, and closed by the thread itself) and writes with :meth:`write_all` and
    :meth:`copy`, which do nothing more once :meth:`stop` was called.  A :meth:`run` that
    fails or is cancelled stops the writes: an abandoned thread then ends with the system
    call it was blocked in, and the owner may close its descriptors at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        def call() -> R:
            return function(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """No write starts from now on (idempotent; never blocks for long)."""
        with self._lock:
            self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    @contextlib.contextmanager
    def borrow(self, *fds: int) -> Iterator[tuple[int, ...]]:
        """Blocking: duplicates of ``fds`` for this thread alone, closed when it leaves.
        Raises :class:`Stopped` once the writes are stopped."""
        with self._lock:
            if self._stopped:
                raise Stopped
            own: list[int] = []
            try:
                for fd in fds:
                    own.append(os.dup(fd))
            except BaseException:
                _close_all(own)
                raise
        try:
            yield tuple(own)
        finally:
            _close_all(own)

    def write_all(self, fd: int, data: bytes | memoryview) -> None:
        """Blocking: write all of ``data`` to ``fd`` (a borrowed one), unless stopped first;
        raises :class:`Stopped` when stopped before the end."""
        view = memoryview(data)
        while view:
            if self._stopped:
                raise Stopped
            view = view[os.write(fd, view) :]

    def copy(self, kernel: KernelCopy, src: int, offset: int, count: int) -> int:
        """Blocking: copy up to ``count`` bytes of ``src`` from ``offset`` into ``kernel``'s
        destination at its current position (both borrowed); return how many (fewer only
        at the end of ``src``).  Raises :class:`Stopped` when stopped before the end."""
        done = 0
        while done < count:
            if self._stopped:
                raise Stopped
            n = kernel.copy(src, offset + done, count - done, None)
            if n == 0:
                break
            done += n
        return done


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
