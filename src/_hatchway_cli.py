"""The ``hatchway`` command's first lines: stop signals are handled from the moment it starts.

This module sits outside the ``hatchway`` package on purpose: importing anything inside it
imports the package, which imports the whole library (~130 ms) — the public names are loaded
eagerly, so that an application's first ``hatchway.save`` does not import them on its event
loop.  The command installs its handlers first, then imports the commands.

Until an operation starts (while modules are imported, arguments parsed, an image list read
from standard input), nothing exists that a stop would have to clean up, so a stop signal
ends the command at once — with the line and status a stop has at any other time, instead of
a ``KeyboardInterrupt`` traceback or a silent death.  Once an operation runs,
``hatchway.cli.signals`` takes over.  What this module learned before the commands were
imported (the signals noted so far, the standard descriptors found closed) is handed to them as
a :class:`Start` (click's ``obj``): the commands never import this module back.  Standard
library only.
"""

from __future__ import annotations

# The C module: ``signal`` imports enum (~5 ms) before any handler could be set.
import _signal  # type: ignore[import-not-found]
import os
import sys

#: The signals that stop a command: Ctrl-C, ``kill``/``timeout``/``docker stop``, and a
#: closed terminal.
STOP_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


def outcome(signum: int) -> tuple[int, str]:
    """The exit status and the last line of a command stopped by ``signum``."""
    import signal

    if signum == signal.SIGINT:
        return 130, "hatchway: interrupted"
    return 128 + signum, f"hatchway: terminated ({signal.Signals(signum).name})"


class Stopped(BaseException):
    """A stop signal arrived before any operation started (a ``BaseException``, like
    ``KeyboardInterrupt``: no ``except Exception`` on the way may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: Stop signals received so far.  Raising from a handler interrupts whatever runs (a read of
#: standard input), but Python drops an exception raised inside some callbacks (an import's
#: lock cleanup); so each signal is also kept here, and looked at once the commands are
#: imported and again when the operation starts (``hatchway.cli.signals``, whose handlers
#: only :func:`note` them while no receiver listens).
received: list[int] = []


def note(signum: int, frame: object) -> None:
    """A handler that keeps the signal for later."""
    received.append(signum)


def _stop(signum: int, frame: object) -> None:
    note(signum, frame)
    raise Stopped(signum)


def check() -> None:
    """Raise :class:`Stopped` for a signal whose exception was dropped."""
    if received:
        raise Stopped(received[0])


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    if not isinstance(unraisable.exc_value, Stopped):  # a dropped stop: check() acts on it
        sys.__unraisablehook__(unraisable)


def install() -> None:
    """Stop at once on a stop signal (until ``hatchway.cli.signals.run`` installs its own)."""
    sys.unraisablehook = _unraisable
    try:
        for signum in STOP_SIGNALS:
            _signal.signal(signum, _stop)
    except Stopped:
        pass  # one arrived meanwhile: kept in `received`, and acted on by check()


def ignore() -> None:
    """The outcome is decided: stop signals can no longer change it, nor cut it short."""
    for signum in STOP_SIGNALS:
        _signal.signal(signum, _signal.SIG_IGN)


#: The standard descriptors (0, 1, 2) that were closed when the command started.
closed_at_start: frozenset[int] = frozenset()


def hold_standard_descriptors() -> None:
    """Open ``/dev/null`` on each closed standard descriptor, and note which were closed.

    A closed descriptor is the lowest free one: the next file opened (the event loop's epoll,
    a staging file) would become "standard output", and the archive would go into it.  The
    placeholder is opened read-only, so that writing into it fails as writing into the closed
    descriptor would have (``-o /dev/stdout`` is refused, not poured into ``/dev/null``).
    """
    global closed_at_start
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            placeholder = os.open(os.devnull, os.O_RDONLY)
            if placeholder != fd:  # a lower one was closed too and is held already
                os.dup2(placeholder, fd)
                os.close(placeholder)
    closed_at_start = frozenset(closed)


class Start:
    """What the command's first lines know, for the commands (``hatchway.cli.signals.Start``
    describes it): the stop signals, the ones noted so far, how to note and ignore them and
    what a stop means, and which standard descriptors were closed at start."""

    stop_signals = STOP_SIGNALS

    def __init__(self) -> None:
        self.received = received
        self.closed_at_start = closed_at_start

    @staticmethod
    def note(signum: int, frame: object) -> None:
        note(signum, frame)

    @staticmethod
    def ignore() -> None:
        ignore()

    @staticmethod
    def outcome(signum: int) -> tuple[int, str]:
        return outcome(signum)


def main(args: list[str] | None = None, prog_name: str | None = None) -> None:
    """The ``hatchway`` command (arguments from ``sys.argv`` unless given)."""
    install()
    hold_standard_descriptors()
    try:
        from hatchway.cli.commands import commands

        check()
        commands.main(args=args, prog_name=prog_name, obj=Start())
    except Stopped as stop:
        ignore()
        code, message = outcome(stop.signum)
        if sys.stderr is not None:  # None when stderr was closed at start
            sys.stderr.write(message + "\n")
        sys.exit(code)
