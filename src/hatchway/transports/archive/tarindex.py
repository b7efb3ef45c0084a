"""Random access into a tar archive: an index of member offsets, built in one pass.

An archive is read as a file of known members, never whole into memory: one pass over the
headers (Python's :mod:`tarfile` parser, which seeks over bodies) records each member's
name, type, size and the offset of its body; after that a member is a byte range of the
file, read with ``pread`` or handed to the engine as a :class:`~hatchway.transports.base.
LocalBlob` (and copied by ``copy_file_range`` into an output).

A compressed archive (gzip or zstd, recognised by its magic bytes, not its name) is first
decompressed once into a private file under the caller's temp directory (a :class:`Scratch`,
which removes it when the copy ends, even while the unpacking still runs).

What makes an archive unreadable, each reported naming the member (:class:`ArchiveDamage`):
a header that does not parse, a member whose body runs past the end of the file, a tar that
stops without its two end-of-archive blocks (cut exactly between members), a name that is
absolute or contains ``..`` (an archive names members, never paths outside itself), the
same name twice, and a link whose target is outside the archive or missing.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from hatchway.errors import ArchiveDamage, StoreError
from hatchway.limits import CHUNK_SIZE, MAX_DOCUMENT_SIZE
from hatchway.model import Compression
from hatchway.transports.archive.unpack import Scratch, unpack

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAX_LINK_DEPTH = 8
#: The names standard input goes by (``-`` is ``/dev/stdin``).
_STDIN = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})


@dataclass(frozen=True, slots=True)
class TarMember:
    """One member: its (normalised) name, type, body offset and size, and link target."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    offset: int
    size: int
    linkname: str = ""


def sniff(head: bytes) -> Compression:
    """What the first bytes of a file say it is compressed with."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def normalise(name: str) -> str | None:
    """A member name as the archive means it (``./a//b/`` → ``a/b``), or ``None`` when it is
    unsafe: absolute, or climbing out with ``..``."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        return None
    return "/".join(parts)


class TarIndex:
    """The members of the tar at ``path`` (see the module docstring).

    ``description`` names the archive in errors; ``compression`` is what the original file
    was compressed with; ``owned`` is set when :attr:`path` is a decompressed copy this index
    removes on :meth:`close`.  Blocking: use from worker threads.
    """

    def __init__(
        self,
        path: str,
        description: str,
        *,
        compression: Compression = Compression.NONE,
        owned: bool = False,
    ) -> None:
        self.path = path
        self.description = description
        self.compression = compression
        self.owned = owned
        self.members: dict[str, TarMember] = {}
        self.order: list[str] = []
        self.file_size = 0
        #: Where the end-of-archive blocks begin (after the last member).
        self.end = 0

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, description: str, scratch: Scratch) -> TarIndex:
        """Index the archive at ``path``.  A compressed archive is first decompressed into
        ``tmpdir`` (default: the system's); so is a stream (a pipe, ``/dev/stdin``), which can
        be read only once.  A device is refused (:func:`_refuse_device`)."""
        _refuse_device(path, description)
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise StoreError(description, "no such file") from None
        except IsADirectoryError:
            raise StoreError(description, "is a directory, not an archive") from None
        except OSError as exc:
            raise StoreError(description, exc.strerror or str(exc)) from None
        with file:
            try:
                regular = stat.S_ISREG(os.fstat(file.fileno()).st_mode)
                head = file.read(8)
            except OSError as exc:
                raise StoreError(description, exc.strerror or str(exc)) from None
            compression = sniff(head)
            if compression is Compression.NONE and regular:
                index = cls(path, description)
            else:
                plain = unpack(head, file, description, compression, scratch)
                index = cls(plain, description, compression=compression, owned=True)
        try:
            index._scan()
        except BaseException:
            index.close()
            raise
        return index

    def close(self) -> None:
        """Remove the decompressed copy, if this index made one.  Idempotent."""
        if self.owned:
            self.owned = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _scan(self) -> None:
        self.file_size = os.stat(self.path).st_size
        try:
            with tarfile.open(self.path, "r:", errorlevel=2) as tar:
                for info in _members(tar, self.description):
                    self._add(info)
                self.end = tar.offset
        except tarfile.ReadError as exc:
            if not self.members:
                raise ArchiveDamage(self.description, f"not a tar archive ({exc})") from None
            last = self.order[-1]
            raise ArchiveDamage(
                self.description, f"damaged tar header after member {last} ({exc})", last
            ) from None
        except (tarfile.TarError, OSError, UnicodeDecodeError) as exc:
            raise ArchiveDamage(self.description, f"damaged tar archive ({exc})") from None
        if not self.members:
            raise ArchiveDamage(self.description, "not a tar archive (no members)")
        if not self.ends_properly():
            # Cut exactly between two members, a tar still parses: only the end blocks tell.
            last = self.order[-1]
            raise ArchiveDamage(
                self.description,
                f"the tar ends after member {last} without its end-of-archive blocks (truncated?)",
                last,
            )

    def _add(self, info: tarfile.TarInfo) -> None:
        name = normalise(info.name)
        if name is None or not name:
            raise ArchiveDamage(
                self.description,
                f"member {info.name!r}: unsafe name (absolute or with '..')",
                info.name,
            )
        if name in self.members:
            raise ArchiveDamage(self.description, f"member {name} appears twice", name)
        kind = (
            "file"
            if info.isreg()
            else "dir"
            if info.isdir()
            else "symlink"
            if info.issym()
            else "hardlink"
            if info.islnk()
            else "other"
        )
        if kind == "file" and info.offset_data + info.size > self.file_size:
            raise ArchiveDamage(
                self.description,
                f"member {name} is truncated ({info.size} bytes announced, "
                f"{max(0, self.file_size - info.offset_data)} present)",
                name,
            )
        self.members[name] = TarMember(name, kind, info.offset_data, info.size, info.linkname)
        self.order.append(name)

    # -- reading ---------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def file(self, name: str, *, origin: str | None = None) -> TarMember:
        """The regular file ``name`` means, following symlinks and hard links inside the
        archive.  Raises :class:`ArchiveDamage` naming ``origin`` (default ``name``) when it
        is missing, not a file, or a link that leaves the archive or loops."""
        origin = origin or name
        current = name
        for _ in range(_MAX_LINK_DEPTH):
            member = self.members.get(current)
            if member is None:
                missing = "" if current == origin else f" (link target {current})"
                raise ArchiveDamage(
                    self.description, f"member {origin} is missing{missing}", origin
                )
            if member.kind == "file":
                return member
            if member.kind == "symlink":
                target = posixpath.normpath(
                    posixpath.join(posixpath.dirname(current), member.linkname)
                )
            elif member.kind == "hardlink":
                target = member.linkname
            else:
                raise ArchiveDamage(self.description, f"member {origin} is not a file", origin)
            resolved = normalise(target)
            if resolved is None or member.linkname.startswith("/"):
                raise ArchiveDamage(
                    self.description,
                    f"member {origin} links outside the archive ({member.linkname})",
                    origin,
                )
            current = resolved
        raise ArchiveDamage(self.description, f"member {origin}: too many links", origin)

    def read(self, name: str, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """The bytes of the file member ``name`` (a document: at most ``limit`` bytes)."""
        member = self.file(name)
        if member.size > limit:
            raise ArchiveDamage(
                self.description, f"member {name}: {member.size} bytes is too large", name
            )
        return self.read_range(member.offset, member.size, name)

    def ends_properly(self) -> bool:
        """Whether the two zero blocks that end a tar follow the last member (a tar cut
        exactly between two members reads as complete, and lacks them)."""
        if self.file_size < self.end + 1024:
            return False
        return self.read_range(self.end, 1024, "end of archive") == bytes(1024)

    def read_range(self, offset: int, size: int, name: str) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(self.description, exc.strerror or str(exc)) from None
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise ArchiveDamage(self.description, f"member {name} is truncated", name)
        return data

    def head(self, member: TarMember, n: int = 8) -> bytes:
        return self.read_range(member.offset, min(n, member.size), member.name)

    def chunks(self, member: TarMember) -> Iterator[bytes]:
        """The member's bytes in ``CHUNK_SIZE`` chunks (blocking)."""
        return self.read_chunks(member.offset, member.size, member.name)

    def read_chunks(self, offset: int, size: int, name: str = "") -> Iterator[bytes]:
        """``size`` bytes from ``offset`` in ``CHUNK_SIZE`` chunks (blocking)."""
        with open(self.path, "rb") as file:
            file.seek(offset)
            remaining = size
            while remaining:
                chunk = file.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise ArchiveDamage(self.description, f"member {name} is truncated", name)
                remaining -= len(chunk)
                yield chunk


def _refuse_device(path: str, description: str) -> None:
    """A character or block device named as an archive is refused before it is opened: it is
    no archive, and ``/dev/zero`` would be copied into the temp directory until the disk is
    full.  Standard input is read whatever it is (what is piped or redirected into it is the
    user's choice), and so is a FIFO: both are streams that end."""
    if path in _STDIN:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # opening it says what is wrong
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a character device" if stat.S_ISCHR(mode) else "a block device"
        raise StoreError(description, f"is {kind}, not an archive")


def _members(tar: tarfile.TarFile, description: str) -> Iterator[tarfile.TarInfo]:
    while True:
        info = tar.next()
        if info is None:
            return
        yield info
