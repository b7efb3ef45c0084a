"""Compress an uncompressed layer for a registry, deterministically: the other half of
``decode.py``, run on worker threads.

A registry stores layers compressed, so ``push`` compresses the uncompressed layers an archive
or a store holds (``--compress-layers``).  The digest of the compressed blob becomes part of
the pushed manifest, so the same layer must give the same bytes on every push — the same
bundle pushed twice, or to two registries, must not upload new blobs or change manifests:

* **gzip** is raw deflate from the standard library's zlib at :data:`GZIP_LEVEL` between a
  fixed header (no name, mtime 0, OS "unknown") and the CRC32/size trailer, written here
  rather than by zlib, whose header records the OS it was built on.  zlib's deflate output
  depends only on the input, the level and zlib itself — not on how the input is split into
  writes, nor on the CPU — and the reference zlib has kept it stable for many years.  (ISA-L,
  twice as fast, is used for *decompressing* only: its output depends on the CPU's features.)
  A Python linked against zlib-ng instead (Fedora 40+) compresses to other bytes: same
  content, other digests.
* **zstd** is python-zstandard's bundled libzstd at :data:`ZSTD_LEVEL`, single-threaded, with
  a checksum and no content size, whose output is equally independent of write boundaries.

:class:`LayerEncoder` is pushed the uncompressed bytes and writes the compressed ones into a
sink, hashing them; :meth:`LayerEncoder.finish` returns their digest and size.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from enum import Enum
from typing import IO, Any, cast

import zstandard

from hatchway.limits import CHUNK_SIZE
from hatchway.model import DOCKER_MANIFEST, Compression

#: zlib's fastest level: about three times the speed of the default (6) for a tenth more bytes
#: on typical layers — compression is the bottleneck of a push on a fast network.
GZIP_LEVEL = 1
ZSTD_LEVEL = 3
#: ID1 ID2, deflate, no flags, mtime 0, no extra flags, OS 255 ("unknown"), as Go writes it.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class LayerCompression(Enum):
    """What ``push`` does with a layer stored uncompressed (``--compress-layers``)."""

    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"

    @property
    def compression(self) -> Compression:
        return Compression(self.value)


_OCI_BASES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
)
_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def compressed_media_type(media_type: str, compression: Compression) -> str | None:
    """The media type of an uncompressed layer type once compressed (``None``: there is none,
    as for zstd in a Docker schema 2 manifest)."""
    if compression is Compression.NONE:
        return media_type
    if media_type in _OCI_BASES:
        return f"{media_type}+{compression.value}"
    if media_type == _DOCKER_LAYER and compression is Compression.GZIP:
        return "application/vnd.docker.image.rootfs.diff.tar.gzip"
    return None


def manifest_allows(manifest_type: str, compression: Compression) -> bool:
    """Whether a manifest of this type can describe layers compressed so."""
    return not (manifest_type == DOCKER_MANIFEST and compression is Compression.ZSTD)


class _Digesting:
    """The sink the encoder writes into: hashes and counts on the way through."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        if data:
            self.hash.update(data)
            self.sink.write(data)
            self.size += len(data)
        return len(data)


class LayerEncoder:
    """Compress the bytes written into it with ``compression`` and write them to ``sink``.

    :meth:`write` takes consecutive chunks of the uncompressed layer (from one thread at a
    time); :meth:`finish` ends the stream and returns ``(digest, size)`` of what ``sink``
    received.  ``Compression.NONE`` writes the bytes through unchanged.
    """

    def __init__(self, compression: Compression, sink: IO[bytes]) -> None:
        self._out = _Digesting(sink)
        self._compression = compression
        self._deflate: Any = None
        self._zstd: Any = None
        self._crc = 0
        self._isize = 0
        if compression is Compression.GZIP:
            self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            self._out.write(GZIP_HEADER)
        elif compression is Compression.ZSTD:
            params = zstandard.ZstdCompressionParameters.from_level(
                ZSTD_LEVEL, write_checksum=True, write_content_size=False, threads=0
            )
            self._zstd = zstandard.ZstdCompressor(compression_params=params).stream_writer(
                cast(IO[bytes], self._out), write_size=CHUNK_SIZE, closefd=False
            )

    def write(self, data: bytes | memoryview) -> int:
        if self._deflate is not None:
            self._crc = zlib.crc32(data, self._crc)
            self._isize += len(data)
            self._out.write(self._deflate.compress(data))
        elif self._zstd is not None:
            self._zstd.write(data)
        else:
            self._out.write(data)
        return len(data)

    def finish(self) -> tuple[str, int]:
        """End the compressed stream; the digest and size of everything written out."""
        if self._deflate is not None:
            self._out.write(self._deflate.flush())
            self._out.write(struct.pack("<II", self._crc, self._isize & 0xFFFFFFFF))
            self._deflate = None
        elif self._zstd is not None:
            self._zstd.flush(zstandard.FLUSH_FRAME)
            self._zstd = None
        return "sha256:" + self._out.hash.hexdigest(), self._out.size
