"""Running a command on trio: signals, and turning every outcome into one line and a code.

Exit status: 0 success, 1 error (one ``hatchway: error:`` line on stderr), 2 usage error
(click's), 130 interrupted (Ctrl-C), 128+N terminated by signal N (SIGTERM, SIGHUP).  Every
signal cancels the operation, so its shielded cleanup — staging directory, temp files — runs
before the process exits.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from hatchway import HatchwayError

T = TypeVar("T")


class Exit(Exception):
    """The command ends: print ``message`` (unless empty) on stderr and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error(message: object) -> Exit:
    """The one-line failure of a command (exit status 1)."""
    return Exit(1, f"hatchway: error: {message}")


class _Terminated(Exception):
    """SIGTERM or SIGHUP arrived: the operation was cancelled (and cleaned up) on purpose."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _cancel_on_signals(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn``, cancelling it (so its shielded cleanup runs) on SIGTERM or SIGHUP —
    what ``timeout``, ``docker stop`` and a closed terminal send.  Ctrl-C is trio's own."""
    received: list[int] = []
    result: list[T] = []
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                    async for signum in signals:
                        received.append(signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            result.append(await fn())
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _single(group) from None
    if received:
        raise _Terminated(received[0])
    return result[0]


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a group from :func:`_cancel_on_signals` carries (its only child task
    never fails, so there is one; a nested group is reported as it is)."""
    return group.exceptions[0] if len(group.exceptions) == 1 else group


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on trio; raise :class:`Exit` for every outcome but success."""
    try:
        return anyio.run(_cancel_on_signals, fn, backend="trio")
    except HatchwayError as exc:
        raise error(exc) from None
    except _Terminated as exc:
        raise Exit(128 + exc.signum, f"hatchway: terminated ({exc})") from None
    except KeyboardInterrupt:
        raise Exit(130, "hatchway: interrupted") from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise error(f"{exc.strerror or exc}{where}") from None
    except BaseExceptionGroup as group:  # an unexpected failure inside a task group
        if group.subgroup(KeyboardInterrupt) is not None:
            raise Exit(130, "hatchway: interrupted") from None
        if os.environ.get("HATCHWAY_DEBUG"):
            raise
        raise error(
            f"internal error: {_first_leaf(group)!r} (HATCHWAY_DEBUG=1 shows the traceback)"
        ) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
