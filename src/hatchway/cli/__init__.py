"""The ``hatchway`` command: thin.  Each command parses its arguments, calls the public API
(``import hatchway``, nothing else of the library) on trio, and turns the outcome into output,
one error line and an exit code (``signals``); ``console`` draws progress and tables."""

from __future__ import annotations

import sys

from hatchway.cli import early

# When httpx is imported it also imports its own command-line tool, if what that needs is
# installed (rich, pygments, click: ~50 ms of this command's start-up).  This process is
# ours and never runs that tool: its import fails, and httpx falls back to a stub.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main(args: list[str] | None = None, prog_name: str | None = None) -> None:
    """The ``hatchway`` command (arguments from ``sys.argv`` unless given).

    Stop signals are handled from its first line: importing the commands is most of the
    command's start-up, and this module imports nothing heavy (nor does ``hatchway``).
    """
    early.install()
    early.hold_standard_descriptors()
    try:
        from hatchway.cli.commands import commands

        early.check()
        commands.main(args=args, prog_name=prog_name)
    except early.Stopped as stop:
        early.ignore()
        code, message = early.outcome(stop.signum)
        sys.stderr.write(message + "\n")
        sys.exit(code)
