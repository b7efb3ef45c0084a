"""Compressed bundles: ``-o x.tar.gz|.tgz|.tar.zst|.tar.zstd``, ``--compress``, levels.

The decompressed bytes are exactly the plain archive; the compressed bytes are identical on
every run and at every ``--jobs``; nothing unverified ever reaches a finished file.
"""

from __future__ import annotations

import gzip
import subprocess
import threading
from pathlib import Path

import anyio
import pytest
import zstandard

import hatchway
from hatchway.transports.archive.compress import Compressor, compression_for_path
from tests.support import Family, files_under
from tests.test_cli import run
from tests.test_failures import corrupt_same_size

pytestmark = pytest.mark.anyio

NAMES = ["app", "tools", "busybox", "127.0.0.1:5000/other:v1"]


def decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    assert data[:4] == b"\x28\xb5\x2f\xfd", data[:4]
    return zstandard.ZstdDecompressor().stream_reader(data).read()


def test_suffixes() -> None:
    assert compression_for_path("a/b.tar.gz") is hatchway.Compression.GZIP
    assert compression_for_path("B.TGZ") is hatchway.Compression.GZIP
    assert compression_for_path("b.tar.zst") is hatchway.Compression.ZSTD
    assert compression_for_path("b.tar.zstd") is hatchway.Compression.ZSTD
    for plain in ("b.tar", "b.gz", "b.zst", "b.tar.gz.part", "tar.gz"):
        assert compression_for_path(plain) is hatchway.Compression.NONE


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar.zst", ".tar.zstd"])
async def test_decompressed_bytes_equal_the_plain_archive(
    family: Family, tmp_path: Path, suffix: str
) -> None:
    plain = tmp_path / "plain.tar"
    await hatchway.save(NAMES, plain, store=family.root)
    out = tmp_path / f"bundle{suffix}"
    result = await hatchway.save(NAMES, out, store=family.root)
    data = out.read_bytes()
    assert decompress(data) == plain.read_bytes()
    assert result.bytes_written == len(data)
    assert result.archive_size == plain.stat().st_size
    assert len(data) < plain.stat().st_size
    assert sorted(files_under(tmp_path)) == sorted(
        [
            "plain.tar",
            f"bundle{suffix}",
            *[p for p in files_under(tmp_path) if p.startswith("store")],
        ]
    )


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
async def test_identical_at_every_jobs_and_run(
    family: Family, tmp_path: Path, compression: str
) -> None:
    outputs = set()
    for i, jobs in enumerate((1, 3, 8, 8)):
        out = tmp_path / f"{i}.tar.any"
        await hatchway.save(NAMES, out, store=family.root, jobs=jobs, compression=compression)
        outputs.add(out.read_bytes())
    assert len(outputs) == 1


async def test_levels_change_the_bytes_not_the_content(family: Family, tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    await hatchway.save(NAMES, plain, store=family.root)
    seen = {}
    for compression, levels in (("zstd", (1, 3, 19)), ("gzip", (0, 1, 2, 3))):
        for level in levels:
            out = tmp_path / f"{compression}{level}"
            await hatchway.save(
                NAMES, out, store=family.root, compression=compression, compression_level=level
            )
            data = out.read_bytes()
            assert decompress(data) == plain.read_bytes()
            seen[(compression, level)] = data
    assert len(set(seen.values())) == len(seen)


async def test_compress_none_overrides_the_suffix(family: Family, tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    await hatchway.save(NAMES, plain, store=family.root)
    out = tmp_path / "really-plain.tar.gz"
    await hatchway.save(NAMES, out, store=family.root, compression="none")
    assert out.read_bytes() == plain.read_bytes()


async def test_a_stream_output_is_compressed_when_asked(family: Family, tmp_path: Path) -> None:
    reference = tmp_path / "ref.tar.zst"
    await hatchway.save(NAMES, reference, store=family.root)
    chunks: list[bytes] = []

    class Collect(anyio.abc.ByteSendStream):
        async def send(self, item: bytes) -> None:
            chunks.append(item)

        async def send_eof(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    result = await hatchway.save(NAMES, Collect(), store=family.root, compression="zstd")
    assert b"".join(chunks) == reference.read_bytes()
    assert result.bytes_written == reference.stat().st_size


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
async def test_a_damaged_adopted_layer_leaves_nothing(
    family: Family, tmp_path: Path, suffix: str
) -> None:
    """Uncompressed store layers are adopted unverified and checked while being compressed:
    a mismatch fails the save and the temp file is discarded."""
    corrupt_same_size(family.builder.blob_path(family.layers["l2"].digest))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(hatchway.DigestMismatch):
        await hatchway.save(["app:2.0"], out / f"b{suffix}", store=family.root)
    assert files_under(out) == []


async def test_bad_levels(family: Family, tmp_path: Path) -> None:
    cases = [
        ("zstd", 0, "zstd levels are 1-19, not 0"),
        ("zstd", 20, "zstd levels are 1-19, not 20"),
        ("gzip", 6, "gzip levels are 0-3, not 6"),
        ("none", 3, "a compression level needs a compressed output"),
        ("lzma", None, "unknown compression 'lzma'"),
    ]
    for compression, level, message in cases:
        with pytest.raises(hatchway.HatchwayError, match=message):
            await hatchway.save(
                ["app"],
                tmp_path / "o.tar",
                store=family.root,
                compression=compression,
                compression_level=level,
            )
    assert not (tmp_path / "o.tar").exists()


def test_cli_stdout_compressed_equals_the_file(family: Family, tmp_path: Path) -> None:
    out = tmp_path / "o.tar.zst"
    result = run("save", "--store", str(family.root), "-o", str(out), *NAMES)
    assert result.returncode == 0, result.stderr
    piped = run("save", "--store", str(family.root), "--compress", "zstd", *NAMES)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == out.read_bytes()
    assert "--compress-level" in run("save", "--help").stdout.decode()
    gz = run("save", "--store", str(family.root), "--compress", "gzip", "--compress-level", "1",
             "app")  # fmt: skip
    assert gz.returncode == 0
    assert gz.stdout[:2] == b"\x1f\x8b"


def test_cli_pipes_into_zstd_and_gzip_tools(family: Family, tmp_path: Path) -> None:
    """The standard tools read what hatchway compresses (and check the zstd checksum)."""
    plain = run("save", "--store", str(family.root), *NAMES).stdout
    for compression, tool in (("zstd", ["zstd", "-dc"]), ("gzip", ["gzip", "-dc"])):
        packed = run("save", "--store", str(family.root), "--compress", compression, *NAMES)
        unpacked = subprocess.run(tool, input=packed.stdout, capture_output=True, check=True)
        assert unpacked.stdout == plain


def test_cli_bad_level_is_a_usage_error(family: Family, tmp_path: Path) -> None:
    result = run("save", "--store", str(family.root), "-o", str(tmp_path / "o.tar.gz"),
                 "--compress-level", "9", "app")  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.decode().splitlines()[-1]
    assert last == "Error: Invalid value for '--compress-level': gzip levels are 0-3, not 9"
    assert files_under(tmp_path) == [p for p in files_under(tmp_path) if p.startswith("store")]


@pytest.mark.parametrize("kind", [hatchway.Compression.ZSTD, hatchway.Compression.GZIP])
def test_an_abandoned_stream_is_ended_off_the_caller_s_thread(kind: hatchway.Compression) -> None:
    """Closing a stream ends it: zstd first compresses what its workers hold (seconds at
    level 19).  An abandoned stream (an error, a cancellation) is closed on a thread of its
    own, so whoever abandons it returns at once — cancellation must take milliseconds."""
    compressor = Compressor(kind, 3)
    compressor.feed(bytes(1 << 20))
    released, ended = threading.Event(), threading.Event()
    real = compressor._writer

    class Slow:
        def close(self) -> None:
            released.wait(timeout=30)
            real.close()
            ended.set()

    compressor._writer = Slow()
    compressor.close()  # returns while the stream is still being ended
    assert not ended.is_set()
    compressor.close()  # idempotent: no second close
    released.set()
    assert ended.wait(timeout=30)
