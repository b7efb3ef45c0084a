"""Running a command on trio: signals, and turning every outcome into one line and a code.

Exit status: 0 success, 1 error (one ``hatchway: error:`` line on stderr), 2 usage error
(click's, and the library's :class:`~hatchway.InvalidArgument`, reported the same way),
130 interrupted (Ctrl-C), 128+N terminated by signal N (SIGTERM, SIGHUP).

Signals: the first SIGINT, SIGTERM or SIGHUP cancels the operation, whatever it is doing
(reads and writes run in bounded steps on worker threads, so cancellation takes effect within
one step), and its shielded cleanup — staging directory, temp files — runs to the end.  Every
further signal is absorbed until that cleanup has finished (a second Ctrl-C, or the SIGTERM
that follows a SIGHUP when a terminal closes, must not cut it short); then the process exits
with the first signal's status.

Anything else that escapes the operation is a bug: it is reported as one ``internal error``
line with a hint, after cleanup, and ``HATCHWAY_DEBUG=1`` shows its traceback instead.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import anyio
import click

from hatchway import HatchwayError, InvalidArgument

T = TypeVar("T")


class Start(Protocol):
    """What the command's entry point (``_hatchway_cli``, which installs the stop-signal
    handlers before anything else is imported) hands the commands as click's ``obj``."""

    #: The signals that stop a command.
    stop_signals: Sequence[int]
    #: Stop signals received so far (the entry point's handlers note each one here).
    received: list[int]
    #: The standard descriptors (0, 1, 2) that were closed when the command started.
    closed_at_start: frozenset[int]

    def note(self, signum: int, frame: object) -> None:
        """A signal handler that only keeps the signal in :attr:`received`."""
        ...

    def ignore(self) -> None:
        """Ignore every stop signal from now on."""
        ...

    def outcome(self, signum: int) -> tuple[int, str]:
        """The exit status and the last line of a command stopped by ``signum``."""
        ...


def start() -> Start:
    """The running command's :class:`Start` (click's ``obj``, set by the entry point)."""
    obj = click.get_current_context().find_root().obj
    assert obj is not None, "the command runs from its entry point, _hatchway_cli.main"
    return obj  # type: ignore[no-any-return]


class Exit(Exception):
    """The command ends: print ``message`` (unless empty) on stderr and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error(message: object) -> Exit:
    """The one-line failure of a command (exit status 1)."""
    return Exit(1, f"hatchway: error: {message}")


#: The command-line parameter that sets each argument of the library whose name differs.
_PARAMETERS = {"compression_level": "compress_level", "compression": "compress"}


def usage_error(exc: InvalidArgument) -> click.UsageError:
    """The library found an argument it cannot use: a usage error (exit status 2) of the
    option or argument of the running command that set it."""
    ctx = click.get_current_context()
    name = _PARAMETERS.get(exc.argument, exc.argument)
    for param in ctx.command.params:
        if param.name == name:
            return click.BadParameter(exc.message, ctx=ctx, param=param)
    return click.UsageError(exc.message, ctx=ctx)


#: Outcomes that are not failures of the operation: they pass through with their own meaning.
_PASSED_ON = (SystemExit, click.ClickException, click.exceptions.Exit, click.exceptions.Abort)


class _Terminated(Exception):
    """A stop signal arrived: the operation was cancelled (and cleaned up) on purpose."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _cancel_on_signals(early: Start, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn``, cancelling it (so that its shielded cleanup runs) on the first stop signal.

    The signal receiver stays open until ``fn`` has returned or raised — its cleanup included
    — so later signals are absorbed instead of killing the process half-way through cleanup.
    Once a signal arrived, the command was stopped, whatever ``fn`` raised — unless it
    returned: then the work was done (the archive committed) before the stop could take
    effect, and the command succeeded.
    """
    received: list[int] = []
    result: list[T] = []
    stops = [signal.Signals(s) for s in early.stop_signals]
    with anyio.open_signal_receiver(*stops) as signals:
        work = anyio.CancelScope()
        if early.received:  # a signal arrived before the receiver was there: act on it now
            received.append(early.received[0])
            work.cancel()
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    async for signum in signals:
                        if not received:
                            received.append(signum)
                            work.cancel()

                tg.start_soon(watch)
                with work:
                    result.append(await fn())
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if not received:
                raise _single(group) from None
        except BaseException:
            if not received:
                raise
    if received and not result:
        raise _Terminated(received[0])
    return result[0]


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a group from :func:`_cancel_on_signals` carries (its only child task
    never fails, so there is one; a nested group is reported as it is)."""
    return group.exceptions[0] if len(group.exceptions) == 1 else group


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on trio; raise :class:`Exit` for every outcome but success."""
    early = start()
    # Start-up is done: the collector need never walk the imported modules' objects again
    # (full collections during a save of a thousand images get that much shorter).
    gc.freeze()
    # Until trio's signal receiver is installed, and again after it is gone (while trio
    # shuts down, when cleanup is over), a stop signal is only noted: the receiver acts on
    # one noted before it, and one after it cannot kill the process before its last line
    # (the receiver restores the handlers it found, so these are what it restores).  One
    # already noted — its exception dropped during start-up — is acted on too.
    for signum in early.stop_signals:
        signal.signal(signum, early.note)
    try:
        return _outcome(early, fn)
    finally:
        # The outcome is decided — the archive committed or discarded — and a stop signal
        # from now on could only make the command lie about it, or cut its last line short.
        early.ignore()


def _outcome(early: Start, fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return anyio.run(_cancel_on_signals, early, fn, backend="trio")
    except InvalidArgument as exc:
        raise usage_error(exc) from None
    except HatchwayError as exc:
        raise error(exc) from None
    except _Terminated as exc:
        raise Exit(*early.outcome(exc.signum)) from None  # run() ignores further signals
    except KeyboardInterrupt:  # a SIGINT handler not ours (the command always installs one)
        raise Exit(130, "hatchway: interrupted") from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise error(f"{exc.strerror or exc}{where}") from None
    except BaseExceptionGroup as group:  # an unexpected failure inside a task group
        if group.subgroup(KeyboardInterrupt) is not None:
            raise Exit(130, "hatchway: interrupted") from None
        passed_on = group.subgroup(_PASSED_ON)
        if passed_on is not None:  # an exit asked for keeps its status
            raise _first_leaf(passed_on) from None
        ours, rest = group.split(HatchwayError)
        if ours is not None and rest is None:  # only errors of ours: report the first
            first = _first_leaf(ours)
            if isinstance(first, InvalidArgument):
                raise usage_error(first) from None
            raise error(first) from None
        if os.environ.get("HATCHWAY_DEBUG"):
            raise
        raise _internal(_first_leaf(group)) from None
    except _PASSED_ON:
        raise  # click's own outcomes keep their meaning (usage errors exit 2)
    except Exception as exc:  # the last resort: a bug, never a traceback
        if os.environ.get("HATCHWAY_DEBUG"):
            raise
        raise _internal(exc) from None


def _internal(exc: BaseException) -> Exit:
    """The one line for an error hatchway did not expect."""
    return error(
        f"internal error: {exc!r}; this is a bug in hatchway, please report it "
        "(HATCHWAY_DEBUG=1 shows the traceback)"
    )


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
