"""Deterministic tar headers: the bytes of a POSIX (ustar, with PAX records when needed) tar.

Pure.  Every header carries uid/gid 0, empty user and group names and the mtime the archive
plan gives, so the same plan always yields the same bytes (docs/formats.md, Determinism).
Bodies are padded to 512-byte blocks and the archive ends with two zero blocks, as Go's
``archive/tar`` (and so ``docker save``) writes it.
"""

from __future__ import annotations

import struct

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

_REGULAR = b"0"
_SYMLINK = b"2"
_DIRECTORY = b"5"
_PAX = b"x"
_USTAR_NAME_MAX = 100
_USTAR_PREFIX_MAX = 155
_OCTAL_12_MAX = 8**11 - 1


def padding(size: int) -> bytes:
    """The zero bytes that complete a body of ``size`` bytes to a whole block."""
    return bytes(-size % BLOCK)


def file_header(name: str, size: int, mtime: int, mode: int = 0o644) -> bytes:
    return _header(name, _REGULAR, size=size, mtime=mtime, mode=mode)


def directory_header(name: str, mtime: int, mode: int = 0o755) -> bytes:
    return _header(name.rstrip("/") + "/", _DIRECTORY, size=0, mtime=mtime, mode=mode)


def symlink_header(name: str, target: str, mtime: int) -> bytes:
    return _header(name, _SYMLINK, size=0, mtime=mtime, mode=0o777, linkname=target)


def member_size(header_size: int, body_size: int) -> int:
    """Bytes a member takes in the archive: its header(s), body and padding."""
    return header_size + body_size + len(padding(body_size))


def _header(
    name: str, typeflag: bytes, *, size: int, mtime: int, mode: int, linkname: str = ""
) -> bytes:
    if size < 0 or mtime < 0:
        raise ValueError("tar sizes and mtimes are non-negative")
    pax: dict[str, str] = {}
    ustar_name, prefix = _split_name(name)
    if ustar_name is None:
        pax["path"] = name
        ustar_name, prefix = name.encode()[-_USTAR_NAME_MAX:].decode("ascii", "ignore"), ""
    if len(linkname.encode()) > _USTAR_NAME_MAX:
        pax["linkpath"] = linkname
        linkname = ""
    if size > _OCTAL_12_MAX:
        pax["size"] = str(size)
    if mtime > _OCTAL_12_MAX:
        pax["mtime"] = str(mtime)
    block = _ustar_block(
        ustar_name,
        prefix,
        typeflag,
        size=0 if "size" in pax else size,
        mtime=0 if "mtime" in pax else mtime,
        mode=mode,
        linkname=linkname,
    )
    if not pax:
        return block
    records = b"".join(_pax_record(k, v) for k, v in sorted(pax.items()))
    base = name.rstrip("/").rsplit("/", 1)
    pax_name = f"{base[0]}/PaxHeaders.0/{base[1]}" if len(base) == 2 else f"PaxHeaders.0/{base[0]}"
    pax_name = pax_name[-_USTAR_NAME_MAX:]
    pax_block = _ustar_block(pax_name, "", _PAX, size=len(records), mtime=0, mode=0o644)
    return pax_block + records + padding(len(records)) + block


def _split_name(name: str) -> tuple[str | None, str]:
    raw = name.encode()
    if len(raw) <= _USTAR_NAME_MAX:
        return name, ""
    # ustar splits a long name at a '/' into prefix (<=155) and name (<=100).
    for i in range(len(name) - 1, 0, -1):
        if name[i] == "/":
            head, tail = name[:i], name[i + 1 :]
            if len(head.encode()) <= _USTAR_PREFIX_MAX and 0 < len(tail.encode()) <= 100:
                return tail, head
    return None, ""


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _octal(value: int, width: int) -> bytes:
    field = b"%0*o\0" % (width - 1, value)
    if len(field) > width:
        raise ValueError(f"tar field overflow: {value}")
    return field


def _field(text: str, width: int) -> bytes:
    raw = text.encode()
    if len(raw) > width:
        raise ValueError(f"tar field too long: {text!r}")
    return raw  # the header's struct pads it with NULs


# The ustar header: name, mode, uid, gid, size, mtime, checksum, typeflag, linkname, magic and
# version, uname, gname, devmajor, devminor, prefix, padding.  ``s`` fields are NUL-padded.
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12s")
_ZERO_8 = b"0000000\0"  # uid, gid, devmajor, devminor
_CHECKSUM = slice(148, 156)


def _ustar_block(
    name: str,
    prefix: str,
    typeflag: bytes,
    *,
    size: int,
    mtime: int,
    mode: int,
    linkname: str = "",
) -> bytes:
    block = bytearray(
        _USTAR.pack(
            _field(name, 100),
            _octal(mode, 8),
            _ZERO_8,
            _ZERO_8,
            _octal(size, 12),
            _octal(mtime, 12),
            b" " * 8,  # the checksum counts its own field as spaces
            typeflag,
            _field(linkname, 100),
            b"ustar\x0000",
            b"",  # uname
            b"",  # gname
            _ZERO_8,
            _ZERO_8,
            _field(prefix, 155),
            b"",
        )
    )
    block[_CHECKSUM] = b"%06o\0 " % sum(block)
    return bytes(block)
