"""Outputs: where an archive goes — a path (atomically), a file descriptor, or a stream.

Every output writes a whole archive plan through one method, :meth:`ArchiveOutput.write`,
and chooses itself how: a path is written positionally into a temp file; stdout, a device
and a stream front to back.  ``discards_on_error`` says whether the output keeps nothing when
the write fails: only then may it receive layers whose verification is still pending.

A path output is written to a temp file in the target's own directory (so the final rename
stays within one file system), given the target's mode (or, for a new file, ``0666`` less the
umask), optionally flushed to disk (``fsync``), and renamed over the target.  On any error or
cancellation the temp file is removed and an existing target is left untouched.  An existing
special file (``/dev/null``, a FIFO) cannot be replaced that way: it is written in place, and,
like stdout, only ever receives verified bytes.  Without ``fsync`` (the default, as with
``docker save``) a power loss right after the rename may still lose data the kernel had not
written back yet.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import anyio
from anyio.abc import ByteSendStream

from hatchway.errors import OutputError
from hatchway.files import atomic_file
from hatchway.formats import Member
from hatchway.transports.archive.staging import StagedLayer
from hatchway.transports.archive.writers import (
    Advance,
    FdWriter,
    StreamWriter,
    write_positional,
    write_sequential,
)


class ArchiveOutput(Protocol):
    """Where one archive is written."""

    #: For messages: the path, ``standard output``, ...
    description: str
    #: Whether a failed write leaves nothing behind (so unverified bytes may be written).
    discards_on_error: bool
    #: Where the staging area goes unless ``--tmpdir`` says otherwise.
    staging_parent: str

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> None:
        """Write the archive ``members`` (layer bodies from ``bodies``, by diffID)."""
        ...


def output_for(
    target: str | os.PathLike[str] | int | ByteSendStream, *, fsync: bool
) -> ArchiveOutput:
    """The output for a path, a file descriptor or a stream.  A path is checked now, so a
    bad one fails before anything is fetched.

    A symlink is followed (the file it names is replaced, the link stays).  An existing FIFO,
    character device or socket is written in place, front to back.  A path ending in ``/``
    names a directory and is refused, as ``cp`` and ``tar`` refuse it.
    """
    if isinstance(target, int):
        return FdOutput(target)
    if isinstance(target, str | os.PathLike):
        raw = os.fspath(target)
        path = Path(target)
        if raw.endswith("/"):  # Path() drops the slash that says "a directory", as cp reads it
            if path.is_dir():
                raise OutputError(f"{raw} is a directory")
            raise OutputError(f"cannot write {raw}: a trailing slash names a directory")
        if path.is_symlink():
            path = path.resolve()
        if path.exists() and not path.is_file():
            if path.is_dir():
                raise OutputError(f"{path} is a directory")
            return DeviceOutput(path)
        check_destination(path)
        return FileOutput(path, fsync=fsync)
    return StreamOutput(target)


def check_destination(path: Path) -> None:
    """Fail early, before any fetch, when ``path`` cannot become the archive."""
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {parent} is not writable")


class FileOutput:
    """The archive at ``path``, written atomically and positionally.  Discards on error."""

    discards_on_error = True

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self.description = str(path)
        self.staging_parent = str(path.parent)
        self._fsync = fsync

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> None:
        async with atomic_file(self.path, fsync=self._fsync) as fd:
            await write_positional(members, bodies, fd, self.description, advance, jobs=jobs)


class FdOutput:
    """An open file descriptor owned by the caller (stdout for the CLI); not closed here."""

    discards_on_error = False

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.description = "standard output" if fd == 1 else f"file descriptor {fd}"
        self.staging_parent = tempfile.gettempdir()

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> None:
        await write_sequential(members, bodies, FdWriter(self._fd, self.description), advance)


class DeviceOutput:
    """An existing special file (FIFO, device): opened for writing only once all is staged."""

    discards_on_error = False

    def __init__(self, path: Path) -> None:
        self._path = path
        self.description = str(path)
        self.staging_parent = tempfile.gettempdir()

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> None:
        try:
            fd = await anyio.to_thread.run_sync(os.open, self._path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"cannot write {self._path}: {exc.strerror}") from None
        try:
            await write_sequential(members, bodies, FdWriter(fd, self.description), advance)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


class StreamOutput:
    """An anyio byte stream owned by the caller; not closed here."""

    discards_on_error = False
    description = "the stream"

    def __init__(self, stream: ByteSendStream) -> None:
        self._stream = stream
        self.staging_parent = tempfile.gettempdir()

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> None:
        await write_sequential(members, bodies, StreamWriter(self._stream), advance)
