"""The ``hatchway`` command: thin.  Each command parses its arguments, calls the public API
(``import hatchway``, nothing else of the library) on trio, and turns the outcome into output,
one error line and an exit code (``signals``); ``console`` draws progress and tables."""

from __future__ import annotations

import sys

# When httpx is imported it also imports its own command-line tool, if what that needs is
# installed (rich, pygments, click: ~50 ms of this command's start-up).  This process is
# ours and never runs that tool: its import fails, and httpx falls back to a stub.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
