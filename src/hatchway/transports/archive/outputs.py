"""Outputs: where an archive goes — a path (atomically), a file descriptor, or a stream.

Every output writes a whole archive plan through one method, :meth:`ArchiveOutput.write`,
and chooses itself how: a path is written positionally into a temp file; stdout, a device
and a stream front to back.  ``discards_on_error`` says whether the output keeps nothing when
the write fails: only then may it receive layers whose verification is still pending.

A compressed output (:mod:`.compress`: ``-o x.tar.zst``, ``--compress``) is always written
front to back through the compressor — a compressed stream has no offsets to write at.  Into
a temp file it still adopts unverified local layers: they are hashed in the pass that
compresses them, and a mismatch discards the temp file, so no unverified byte is ever part of
a finished output.

A path output is written to a temp file in the target's own directory (so the final rename
stays within one file system), given the target's mode (or, for a new file, ``0666`` less the
umask), optionally flushed to disk (``fsync``), and renamed over the target.  On any error or
cancellation the temp file is removed and an existing target is left untouched.  An existing
special file (``/dev/null``, a FIFO) cannot be replaced that way: it is written in place, and,
like stdout, only ever receives verified bytes.  With ``fsync`` the temp file is flushed
before the rename and its directory after it, so the archive survives a power loss once the
save returned; without (the default, as with ``docker save``) a power loss soon after may
still lose what the kernel had not written back yet.

A path that names an open descriptor (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``, a
link to one; :mod:`hatchway.descriptors`) is not a file name: this process's descriptor is
written through, front to back at its own offset, like stdout; another process's is opened
and appended to.  Neither is replaced, and a terminal — named by a path, or the file such a
descriptor is open on — is refused, as stdout on a terminal is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import anyio
from anyio.abc import ByteSendStream

from hatchway.descriptors import named_descriptor
from hatchway.errors import OutputError
from hatchway.files import AtomicTemp, atomic_file
from hatchway.formats import Member, archive_size
from hatchway.model import Compression
from hatchway.transports.archive.compress import (
    CompressedWriter,
    Compressor,
    check_level,
    compression_for_path,
)
from hatchway.transports.archive.staging import StagedLayer
from hatchway.transports.archive.writers import (
    Advance,
    FdWriter,
    StreamWriter,
    write_positional,
    write_sequential,
)

#: Where an archive may go: a path (written atomically), an anyio byte stream, or a file
#: descriptor the caller owns.
Output = str | os.PathLike[str] | ByteSendStream | int


class ArchiveOutput(Protocol):
    """Where one archive is written."""

    #: For messages: the path, ``standard output``, ...
    description: str
    #: Whether a failed write leaves nothing behind (so unverified bytes may be written).
    discards_on_error: bool
    #: Where the staging area goes unless ``--tmpdir`` says otherwise.
    staging_parent: str

    def placement(self) -> AtomicTemp | None:
        """A temp file to decode layers straight into, at their offsets, before the archive
        is written (``None``: this output is written front to back, or compressed)."""
        ...

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> int:
        """Write the archive ``members`` (layer bodies from ``bodies``, by diffID); return
        the bytes that reached the output (fewer than the archive's when compressed)."""
        ...


@dataclass(frozen=True, slots=True)
class OutputCompression:
    """How an output compresses the archive: ``compression`` at ``level``."""

    compression: Compression = Compression.NONE
    level: int | None = None

    @classmethod
    def choose(
        cls,
        target: object,
        compression: Compression | None,
        level: int | None,
    ) -> OutputCompression:
        """``compression`` if given, else what a path's suffix asks for (``.tar.gz``,
        ``.tgz``, ``.tar.zst``, ``.tar.zstd``), else none; the level checked."""
        if compression is None:
            is_path = isinstance(target, str | os.PathLike)
            compression = (
                compression_for_path(cast("str | os.PathLike[str]", target))
                if is_path
                else Compression.NONE
            )
        return cls(compression, check_level(compression, level))

    def writer(self, description: str, size: int, **where: Any) -> CompressedWriter | None:
        """A compressing writer to ``fd=`` or ``stream=`` (``None``: no compression).  Made
        on the calling thread — the event loop's, which outlives the compressor."""
        if self.compression is Compression.NONE:
            return None
        assert self.level is not None
        return CompressedWriter(
            Compressor(self.compression, self.level, size), description, **where
        )


def output_for(
    target: Output,
    *,
    fsync: bool,
    compression: Compression | None = None,
    level: int | None = None,
) -> ArchiveOutput:
    """The output for a path, a file descriptor or a stream.  A path is checked now, so a
    bad one fails before anything is fetched.

    A symlink is followed (the file it names is replaced, the link stays).  An existing FIFO,
    character device or socket is written in place, front to back.  A path ending in ``/``
    names a directory and is refused, as ``cp`` and ``tar`` refuse it.  ``compression``
    ``None`` means: as a path's suffix says (none for descriptors and streams).
    """
    if isinstance(target, bool) or not (
        isinstance(target, int | str | os.PathLike) or callable(getattr(target, "send", None))
    ):  # checked now: a wrong output would otherwise fail only once all was fetched
        raise TypeError(
            f"output must be a path, a file descriptor or a byte stream, not {target!r:.80}"
        )
    how = OutputCompression.choose(target, compression, level)
    if isinstance(target, int):
        return FdOutput(target, how)
    if isinstance(target, str | os.PathLike):
        raw = os.fspath(target)
        path = Path(target)
        if raw.endswith("/"):  # Path() drops the slash that says "a directory", as cp reads it
            if path.is_dir():
                raise OutputError(f"{raw} is a directory")
            raise OutputError(f"cannot write {raw}: a trailing slash names a directory")
        named = named_descriptor(raw)
        if named is not None and named.ours:
            # Written through the descriptor itself, as stdout is: at its offset (appending
            # after ">>"), into whatever it is — never by replacing the file it shows.
            check_descriptor(named.fd, raw)
            return FdOutput(named.fd, how, description=raw)
        try:
            found = os.stat(raw)  # through every link: what would be written
        except FileNotFoundError:
            if named is not None:  # a descriptor that is not open
                raise OutputError(f"cannot write {raw}: no such open file descriptor") from None
            found = None  # a new file (or a link to one not there yet)
        except OSError as exc:  # a link loop, a path through a non-directory, ...
            raise OutputError(f"cannot write {raw}: {exc.strerror}") from None
        if named is not None or (found is not None and not stat.S_ISREG(found.st_mode)):
            assert found is not None
            if stat.S_ISDIR(found.st_mode):
                raise OutputError(f"{raw} is a directory")
            if stat.S_ISCHR(found.st_mode):
                _refuse_terminal(raw)
            # Opened by the name given, in place.  Another process's descriptor of a regular
            # file is appended to: its own offset cannot be shared, and replacing its file
            # would leave it writing a file nobody can name.
            return DeviceOutput(path, how, append=stat.S_ISREG(found.st_mode))
        if path.is_symlink():
            path = _resolved(path)
        check_destination(path)
        return FileOutput(path, fsync=fsync, compression=how)
    return StreamOutput(target, how)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a link loop, on Python < 3.13
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "too many levels of symbolic links" if isinstance(exc, RuntimeError) else str(exc)


def check_outside(output: ArchiveOutput, read_from: Iterable[Path]) -> None:
    """Refuse an archive file inside a directory the same operation reads (a store, an
    ``oci:`` layout): it would replace a file of it (``index.json``, a blob) with the tar."""
    if not isinstance(output, FileOutput):
        return
    where = _resolved(output.path)
    for directory in read_from:
        try:
            root = directory.resolve(strict=True)
        except (OSError, RuntimeError):
            continue  # not there: reading it fails on its own, with its own message
        if where.is_relative_to(root):
            raise OutputError(
                f"cannot write {output.path}: it is inside {directory}, which this save "
                "reads images from; write the archive elsewhere"
            )


def check_descriptor(fd: int, description: str) -> None:
    """Fail early unless ``fd`` is open for writing and not a terminal (where an archive
    never goes: the rule of stdout, for every path that names a descriptor)."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        raise OutputError(f"cannot write {description}: file descriptor {fd} is not open") from None
    if flags & os.O_ACCMODE == os.O_RDONLY or flags & getattr(os, "O_PATH", 0):
        raise OutputError(
            f"cannot write {description}: file descriptor {fd} is not open for writing"
        )
    if os.isatty(fd):
        raise OutputError(_TERMINAL.format(description))


#: Binary bytes on a terminal are garbage on the screen, and can be control sequences.
_TERMINAL = "refusing to write an archive to a terminal ({}); write it to a file or a pipe"


def _refuse_terminal(path: str) -> None:
    """Refuse the character device ``path`` if it is a terminal (opened without becoming
    anybody's controlling terminal, without waiting, and closed at once)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # writing it will say what is wrong
    try:
        terminal = os.isatty(fd)
    finally:
        os.close(fd)
    if terminal:
        raise OutputError(_TERMINAL.format(path))


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
    """The archive at ``path``, written atomically (positionally unless compressed).
    Discards on error."""

    discards_on_error = True

    def __init__(
        self, path: Path, *, fsync: bool = False, compression: OutputCompression | None = None
    ) -> None:
        self.path = path
        self.description = str(path)
        self.staging_parent = str(path.parent)
        self._fsync = fsync
        self._compression = compression or OutputCompression()

    def placement(self) -> AtomicTemp | None:
        """The temp file layers may be decoded straight into (pipelined writing), when the
        archive is not compressed: its bytes then sit at their final offsets."""
        if self._compression.compression is not Compression.NONE:
            return None
        return AtomicTemp(self.path, fsync=self._fsync)

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> int:
        async with atomic_file(self.path, fsync=self._fsync) as fd:
            size = archive_size(members)
            writer = self._compression.writer(self.description, size, fd=fd, verifies_pending=True)
            if writer is None:
                await write_positional(members, bodies, fd, self.description, advance, jobs=jobs)
                return size
            try:
                await write_sequential(members, bodies, writer, advance)
            finally:
                await writer.aclose()
            return writer.written


class FdOutput:
    """An open file descriptor owned by the caller (stdout for the CLI); not closed here."""

    discards_on_error = False

    def __init__(
        self,
        fd: int,
        compression: OutputCompression | None = None,
        *,
        description: str | None = None,
    ) -> None:
        self._fd = fd
        if description is None:
            description = "standard output" if fd == 1 else f"file descriptor {fd}"
        self.description = description
        self.staging_parent = tempfile.gettempdir()
        self._compression = compression or OutputCompression()

    def placement(self) -> AtomicTemp | None:
        return None  # written front to back, once every layer is verified

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> int:
        return await _write_fd(
            self._fd, self.description, self._compression, members, bodies, advance
        )


class DeviceOutput:
    """An existing special file (FIFO, device), or another process's descriptor: opened for
    writing (appending, when ``append``) only once all is staged."""

    discards_on_error = False

    def __init__(
        self, path: Path, compression: OutputCompression | None = None, *, append: bool = False
    ) -> None:
        self._path = path
        self._append = append
        self.description = str(path)
        self.staging_parent = tempfile.gettempdir()
        self._compression = compression or OutputCompression()

    def placement(self) -> AtomicTemp | None:
        return None  # written front to back, once every layer is verified

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> int:
        try:
            fd = await _open_special(self._path, self._append)
        except OSError as exc:
            raise OutputError(f"cannot write {self._path}: {exc.strerror}") from None
        try:
            return await _write_fd(
                fd, self.description, self._compression, members, bodies, advance
            )
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


class StreamOutput:
    """An anyio byte stream owned by the caller; not closed here."""

    discards_on_error = False
    description = "the stream"

    def __init__(
        self, stream: ByteSendStream, compression: OutputCompression | None = None
    ) -> None:
        self._stream = stream
        self.staging_parent = tempfile.gettempdir()
        self._compression = compression or OutputCompression()

    def placement(self) -> AtomicTemp | None:
        return None  # written front to back, once every layer is verified

    async def write(
        self,
        members: Sequence[Member],
        bodies: Mapping[str, StagedLayer],
        advance: Advance,
        *,
        jobs: int,
    ) -> int:
        size = archive_size(members)
        writer = self._compression.writer(self.description, size, stream=self._stream)
        if writer is None:
            await write_sequential(members, bodies, StreamWriter(self._stream), advance)
            return size
        try:
            await write_sequential(members, bodies, writer, advance)
        finally:
            await writer.aclose()
        return writer.written


#: How often a FIFO nobody reads yet is tried again.
_READER_POLL = 0.05


async def _open_special(path: Path, append: bool) -> int:
    """Open a FIFO or device for writing.  Opening a FIFO blocks until a reader opens it, in
    a thread that cancellation cannot stop; so it is opened without blocking, and tried
    again while there is no reader yet (``ENXIO``), with a checkpoint between tries."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if append:
        flags |= os.O_APPEND
    while True:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno != errno.ENXIO or not stat.S_ISFIFO(os.stat(path).st_mode):
                raise
            await anyio.sleep(_READER_POLL)
            continue
        os.set_blocking(fd, True)
        return fd


async def _write_fd(
    fd: int,
    description: str,
    compression: OutputCompression,
    members: Sequence[Member],
    bodies: Mapping[str, StagedLayer],
    advance: Advance,
) -> int:
    """Front to back into ``fd`` (verified layers only), compressed as asked."""
    size = archive_size(members)
    writer = compression.writer(description, size, fd=fd)
    if writer is None:
        await write_sequential(members, bodies, FdWriter(fd, description), advance)
        return size
    try:
        await write_sequential(members, bodies, writer, advance)
    finally:
        await writer.aclose()
    return writer.written
