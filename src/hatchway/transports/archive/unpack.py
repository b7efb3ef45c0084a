"""Unpacking an archive that cannot be read in place: compressed, or not a regular file.

A gzip or zstd archive, or a pipe (``/dev/stdin``), is copied once — decompressed — into a
private file under the copy's temp directory, which :class:`Scratch` removes when the copy
ends, also while an abandoned unpacking still runs in its worker thread.

What is unpacked must start as a tar does — a header block with a valid checksum — or the
unpacking stops at its first 512 bytes: ``/dev/urandom`` or an endless stream of zeros on
stdin (or a gzip bomb of them) would otherwise be copied until the temp directory is full.

A cut-short compressed stream must be an error, not a shorter archive: gzip's reader raises
on it; python-zstandard's readers end quietly, so every zstd frame is walked alongside the
decompression (:class:`ZstdFrames`: headers and block headers only, the block contents
skipped) and the stream must end exactly at the end of a frame.  The decompression itself is
bounded: it hands on at most ``CHUNK_SIZE`` bytes at a time, however well the input
compresses.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
import threading
from typing import IO, Any, cast

import zstandard
from isal import igzip

from hatchway.errors import ArchiveDamage, StoreError
from hatchway.limits import CHUNK_SIZE
from hatchway.model import Compression

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class Scratch:
    """The unpacked copies of one copy's archives, removed by :meth:`close` — also those
    whose unpacking is still running in an abandoned worker thread (a cancelled copy does not
    wait for a gigabyte to be decompressed): such a thread finds the scratch closed at its
    next step, stops, and removes its own file.  Thread-safe."""

    def __init__(self, tmpdir: str | None) -> None:
        self.tmpdir = tmpdir
        self._lock = threading.Lock()
        self._paths: list[str] = []
        self.closed = False

    def create(self, description: str) -> tuple[int, str]:
        """A new private file (descriptor, path), registered for removal."""
        try:
            fd, path = tempfile.mkstemp(prefix=".hatchway-archive-", suffix=".tar", dir=self.tmpdir)
        except OSError as exc:
            where = self.tmpdir or tempfile.gettempdir()
            raise StoreError(description, f"cannot unpack into {where}: {exc.strerror}") from None
        with self._lock:
            if not self.closed:
                self._paths.append(path)
                return fd, path
        os.close(fd)
        _unlink(path)
        raise StoreError(description, "cancelled")

    def check(self, description: str) -> None:
        """Raise if the scratch was closed (the copy ended) while unpacking."""
        if self.closed:
            raise StoreError(description, "cancelled")

    def close(self) -> None:
        with self._lock:
            self.closed = True
            paths, self._paths = self._paths, []
        for path in paths:
            _unlink(path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ArchiveStreamError(Exception):
    """The compressed stream is damaged (raised inside; reported by :func:`unpack`)."""


def unpack(
    head: bytes,
    file: IO[bytes],
    description: str,
    compression: Compression,
    scratch: Scratch,
) -> str:
    """Copy ``file`` (whose first bytes ``head`` were already read), decompressing it, into a
    new file of ``scratch``; return its path.  Raises
    :class:`~hatchway.errors.ArchiveDamage` for damaged compression and
    :class:`~hatchway.errors.StoreError` for a read error."""

    fd, plain = scratch.create(description)
    source = _Prefixed(head, file)
    try:
        with os.fdopen(fd, "wb") as dst:
            sink = _Checked(dst, scratch, description)
            sink.first = _TarStart(description, compression)
            if compression is Compression.ZSTD:
                _unzstd(source, sink)
            else:
                reader: Any = source
                if compression is Compression.GZIP:
                    reader = igzip.IGzipFile(fileobj=source, mode="rb")  # type: ignore[no-untyped-call]
                while chunk := reader.read(CHUNK_SIZE):
                    sink.write(chunk)
    except (zstandard.ZstdError, ArchiveStreamError, OSError, EOFError, ValueError) as exc:
        _unlink(plain)
        if compression is Compression.NONE:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StoreError(description, f"cannot read: {reason}") from None
        reason = str(exc) or type(exc).__name__
        raise ArchiveDamage(
            description, f"damaged {compression.value} compression ({reason})"
        ) from None
    except BaseException:
        _unlink(plain)
        raise
    if sink.first is not None and sink.first.pending:
        sink.first.check(bytes(sink.first.pending))  # shorter than a block: a tar it is not
    return plain


def _unzstd(source: _Prefixed, sink: _Checked) -> None:
    frames = ZstdFrames()
    watched = _Watched(source, frames)
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], watched), read_size=CHUNK_SIZE, read_across_frames=True
    )
    with reader:
        while chunk := reader.read(CHUNK_SIZE):
            sink.write(chunk)
    frames.finish()


class ZstdFrames:
    """Walks the frame structure of a zstd stream fed in pieces (RFC 8878 section 3.1): frame
    headers, block headers, checksums and skippable frames, skipping block contents.
    :meth:`finish` raises :class:`ArchiveStreamError` unless the stream ended exactly after a
    complete frame; :meth:`feed` raises on anything that is not a frame."""

    def __init__(self) -> None:
        self._need = 4  # bytes of the next header to gather
        self._state = "magic"
        self._buffer = bytearray()
        self._skip = 0
        self._frames = 0
        self._checksum = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            take = min(self._need - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == self._need:
                header, self._buffer = bytes(self._buffer), bytearray()
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if header == ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic in _SKIPPABLE:
                self._state, self._need = "skippable", 4
            else:
                raise ArchiveStreamError("trailing garbage after the zstd data")
        elif state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._frames += 1
            self._state, self._need = "magic", 4
        elif state == "descriptor":
            flags = header[0]
            fcs_flag, single = flags >> 6, (flags >> 5) & 1
            if flags & 0x08:
                raise ArchiveStreamError("reserved bit set in a zstd frame header")
            self._checksum = bool(flags & 0x04)
            dict_size = (0, 1, 2, 4)[flags & 0x03]
            fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
            rest = (0 if single else 1) + dict_size + fcs_size
            self._state, self._need = "block", 3
            self._skip = rest
        elif state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise ArchiveStreamError("reserved block type in a zstd frame")
            self._skip = 1 if kind == 1 else size
            if last:
                if self._checksum:
                    self._skip += 4
                self._frames += 1
                self._state, self._need = "magic", 4
        else:  # pragma: no cover - the states above are all there are
            raise AssertionError(state)

    def finish(self) -> None:
        if self._frames == 0 or self._state != "magic" or self._buffer or self._skip:
            raise ArchiveStreamError("the zstd data ends early (truncated)")


class _Watched:
    """The compressed input on its way to the decompressor, walked by :class:`ZstdFrames`."""

    def __init__(self, source: _Prefixed, frames: ZstdFrames) -> None:
        self._source = source
        self._frames = frames

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._frames.feed(data)
        return data


class _Prefixed:
    """A file read from its start again, after its first bytes were read to sniff them."""

    def __init__(self, head: bytes, file: IO[bytes]) -> None:
        self._head = head
        self._file = file

    def read(self, n: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head[:n] if n >= 0 else self._head, b""
            if n >= 0 and len(head) < n:
                head += self._file.read(n - len(head))
            return head
        return self._file.read(n)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Checked:
    """A file written while unpacking, which stops the unpacking once the copy has ended, and
    checks that it starts as a tar (:class:`_TarStart`)."""

    def __init__(self, file: IO[bytes], scratch: Scratch, description: str) -> None:
        self._file = file
        self._scratch = scratch
        self._description = description
        self.first: _TarStart | None = None

    def write(self, data: bytes) -> None:
        self._scratch.check(self._description)
        if self.first is not None:
            data = self.first.feed(data)
            if self.first.done:
                self.first = None
        if data:
            try:
                self._file.write(data)
            except OSError as exc:  # ENOSPC: where it was written, not "cannot read"
                where = self._scratch.tmpdir or tempfile.gettempdir()
                raise StoreError(
                    self._description, f"cannot unpack into {where}: {exc.strerror}"
                ) from None


class _TarStart:
    """The first block of what is unpacked: a tar header with a valid checksum.  An all-zero
    block (the end-of-archive marker) first means an empty archive."""

    def __init__(self, description: str, compression: Compression) -> None:
        self._description = description
        self._compression = compression
        self.pending = bytearray()
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Hold data until a block is there; check it, then pass everything on."""
        self.pending += data
        if len(self.pending) < _BLOCK:
            return b""
        self.check(bytes(self.pending[:_BLOCK]))
        self.done = True
        held, self.pending = bytes(self.pending), bytearray()
        return held

    def check(self, block: bytes) -> None:

        what = (
            ""
            if self._compression is Compression.NONE
            else f" in the {self._compression.value} data"
        )
        if len(block) < _BLOCK:
            reason = "too short"
        elif not block.strip(b"\0"):  # the end-of-archive marker first
            reason = "no members"
        else:
            try:  # the header as tarfile itself reads it: checksum, numeric fields
                tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError:
                reason = "no tar header at its start"
            else:
                return
        raise ArchiveDamage(self._description, f"not a tar archive{what} ({reason})")


_BLOCK = tarfile.BLOCKSIZE
