"""Tar headers (pure): golden bytes, and what Python's tar reader makes of them."""

from __future__ import annotations

import hashlib
import io
import tarfile

from hatchway import tarstream


def test_file_header_golden_bytes() -> None:
    header = tarstream.file_header("a/json", 3, 1700000000)
    assert len(header) == 512
    assert header[:6] == b"a/json"
    assert header[100:108] == b"0000644\0"
    assert header[108:116] == b"0000000\0"  # uid 0
    assert header[124:136] == b"00000000003\0"
    assert header[136:148] == b"14524770400\0"  # 1700000000 in octal
    assert header[156:157] == b"0"
    assert header[257:265] == b"ustar\x0000"
    assert header[265:297] == bytes(32)  # no user name
    assert hashlib.sha256(header).hexdigest() == (
        "619e9fc40dc63c6957350f1d3822849d955647a7243880e22cc2687e3805ae5a"
    )


def test_checksum_is_valid() -> None:
    header = tarstream.directory_header("dir", 0)
    stored = int(header[148:154], 8)
    assert stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


def _parse(*parts: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(b"".join(parts)), mode="r:") as tar:
        return tar.getmembers()


def test_python_reads_what_we_write() -> None:
    body = b"hello"
    members = _parse(
        tarstream.directory_header("d", 5),
        tarstream.file_header("d/f", len(body), 6),
        body + tarstream.padding(len(body)),
        tarstream.symlink_header("d/l", "../d/f", 7),
        tarstream.END_OF_ARCHIVE,
    )
    assert [(m.name, m.type, m.mtime, m.uid, m.gid) for m in members] == [
        ("d", tarfile.DIRTYPE, 5, 0, 0),
        ("d/f", tarfile.REGTYPE, 6, 0, 0),
        ("d/l", tarfile.SYMTYPE, 7, 0, 0),
    ]
    assert members[2].linkname == "../d/f"
    assert members[0].mode == 0o755 and members[1].mode == 0o644


def test_long_names_use_prefix_or_pax() -> None:
    split = "p" * 120 + "/" + "n" * 90
    unsplittable = "x" * 300
    members = _parse(
        tarstream.file_header(split, 0, 0),
        tarstream.file_header(unsplittable, 0, 0),
        tarstream.END_OF_ARCHIVE,
    )
    assert [m.name for m in members] == [split, unsplittable]


def test_huge_sizes_use_a_pax_record() -> None:
    size = 9 * 1024**3  # beyond 11 octal digits (8 GiB)
    header = tarstream.file_header("big", size, 0)
    assert header[156:157] == b"x"  # a PAX header comes first
    assert f" size={size}\n".encode() in header
    assert len(header) % 512 == 0


def test_padding() -> None:
    assert tarstream.padding(0) == b""
    assert len(tarstream.padding(1)) == 511
    assert tarstream.padding(512) == b""
    assert tarstream.member_size(512, 5) == 1024
