"""Paths that name an open file descriptor: ``/dev/stdout``, ``/dev/fd/N``,
``/proc/self/fd/N``, ``/proc/<pid>/fd/N``, and any symlink that leads to one of them.

On Linux these are links into ``/proc/<pid>/fd/``, and each of its entries is a *magic* link:
``stat`` and ``open`` go to the descriptor's file, but what ``readlink`` (and so
``os.path.realpath``) returns is only a description of it — a path the file had, a
``/tmp/#123 (deleted)`` for a file with no name left, ``pipe:[4711]`` for a pipe.  Treating
such a path as a file name is therefore wrong in every way that matters: replacing "the file
it resolves to" replaces a file the descriptor may have stopped naming, creates a new file
under a made-up name, or writes a file the caller never sees; and opening it anew gives a
new open file with its own offset, not the descriptor's (``>>`` appends through the
descriptor, a fresh open writes from offset 0).

:func:`named_descriptor` recognises such a path by following its links one at a time, as
the kernel does, until one of them lies in a ``/proc/<pid>/fd`` directory.  Only links are
followed: a regular path's directories are resolved with ``realpath``, which is exact for
them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: ``/proc/<pid>/fd`` or ``/proc/<pid>/task/<tid>/fd``, as ``realpath`` spells
#: ``/proc/self/fd`` and ``/proc/thread-self/fd``.
_FD_DIRECTORY = re.compile(r"/proc/(\d+)(?:/task/(\d+))?/fd")
#: Links followed before giving up (the kernel's own limit is 40).
_MAX_LINKS = 40


@dataclass(frozen=True, slots=True)
class NamedDescriptor:
    """The descriptor ``fd`` of the process (or thread) ``pid``, as a path named it."""

    pid: int
    fd: int

    @property
    def ours(self) -> bool:
        """Whether it is a descriptor of this process (``/proc/self``, our pid, or one of
        our threads, which share our descriptors)."""
        return self.pid == os.getpid() or os.path.exists(f"/proc/self/task/{self.pid}")


def named_descriptor(path: str | os.PathLike[str]) -> NamedDescriptor | None:
    """The open descriptor ``path`` names, or ``None`` when it names a file by its name
    (or nothing, or something ``readlink`` cannot read: opening it will say what).

    ``/dev/stdout`` is ``/proc/self/fd/1`` for this process; ``/proc/1234/fd/3`` is the
    descriptor 3 of process 1234 (:attr:`NamedDescriptor.ours` tells them apart).
    """
    current = os.fspath(path)
    if not os.path.isabs(current):
        current = os.path.join(os.getcwd(), current)
    for _ in range(_MAX_LINKS):
        parent, name = os.path.split(current)
        if not name:
            return None  # "/" or a trailing slash: a directory
        real_parent = os.path.realpath(parent)
        found = _FD_DIRECTORY.fullmatch(real_parent)
        if found is not None and name.isdigit():
            return NamedDescriptor(int(found[2] or found[1]), int(name))
        here = os.path.join(real_parent, name)
        try:
            target = os.readlink(here)
        except OSError:  # not a link, or not there
            return None
        current = os.path.join(real_parent, target)  # an absolute target replaces it all
    return None
