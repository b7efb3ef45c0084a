"""A growing corpus of hostile stores and arguments, each run through the real CLI.

Every case must end the same way, however the input misbehaves: exit status 1 or 2, exactly
one ``hatchway: error:`` line and no traceback, nothing on stdout, no output file and nothing
else left beside the output or in ``--tmpdir``, the store exactly as it was — within a
deadline (a hang fails the test instead of hanging CI) and, where a document could be huge,
within bounded memory.  Add a case here whenever a new way to break hatchway is found.

Hostile registries are in ``test_hostile_registry.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hatchway.testing.layout import BuiltImage, BuiltLayer, LayoutBuilder
from tests.bounded import MAX_RSS, assert_one_error_line, run_bounded, snapshot


@dataclass
class Store:
    """One image, ``app:1`` = a gzip layer + an uncompressed layer, in an OCI layout."""

    root: Path
    builder: LayoutBuilder
    packed: BuiltLayer
    plain: BuiltLayer
    image: BuiltImage

    def blob(self, digest: str) -> Path:
        return self.builder.blob_path(digest)

    def replace_blob(self, digest: str, make: Callable[[Path], object]) -> None:
        self.replace(self.blob(digest), make)

    def replace_file(self, name: str, make: Callable[[Path], object]) -> None:
        self.replace(self.root / name, make)

    @staticmethod
    def replace(path: Path, make: Callable[[Path], object]) -> None:
        path.unlink()
        make(path)

    def add_document(self, raw: bytes, media_type: str, name: str = "app:1") -> None:
        """Make ``raw`` (stored under its true digest) the manifest that ``name`` names."""
        digest = self.builder.blob(raw)
        self.builder.entries = []
        self.builder.tag(BuiltImage(digest, len(raw), media_type, ""), name)
        self.builder.save()


def build_store(root: Path) -> Store:
    b = LayoutBuilder(root)
    packed = b.layer({"etc/os-release": b"ID=hostile\n"}, compression="gzip")
    plain = b.layer({"app/data": b"data\n" * 100}, compression="none")
    image = b.image([packed, plain])
    b.tag(image, "app:1")
    b.save()
    return Store(root, b, packed, plain, image)


def manifest_with_config(store: Store, raw_config: bytes) -> None:
    """Point ``app:1`` at a manifest whose config is ``raw_config``."""
    manifest = json.loads(store.blob(store.image.digest).read_bytes())
    manifest["config"]["digest"] = store.builder.blob(raw_config)
    manifest["config"]["size"] = len(raw_config)
    store.add_document(json.dumps(manifest).encode(), manifest["mediaType"])


def fifo(path: Path) -> None:
    os.mkfifo(path)


def symlink_to(target: str) -> Callable[[Path], object]:
    return lambda path: path.symlink_to(target)


def unix_socket(path: Path) -> None:
    # Bound at a short path (sun_path holds 107 bytes), then moved: the socket file stays.
    short = Path(tempfile.mkdtemp(prefix="hw-", dir="/tmp"))
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(short / "s"))
        (short / "s").rename(path)
    finally:
        short.rmdir()


def sparse(size: int) -> Callable[[Path], object]:
    def make(path: Path) -> None:
        with open(path, "wb") as file:
            file.truncate(size)

    return make


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


TWO_GIB = 2 << 30
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _deep_config(store: Store, depth: int) -> None:
    config = json.loads(store.blob(store.image.config_digest).read_bytes())
    config["deep"] = json.loads(nested(depth))
    manifest_with_config(store, json.dumps(config).encode())


def _unknown_type(store: Store, media_type: str | None) -> None:
    manifest = json.loads(store.blob(store.image.digest).read_bytes())
    if media_type is None:
        del manifest["mediaType"]
    else:
        manifest["mediaType"] = media_type
    store.add_document(json.dumps(manifest).encode(), media_type or "")


# Each case: how to spoil the store, and what the one error line must say.
STORE_CASES: dict[str, tuple[Callable[[Store], object], str]] = {
    # Item 1: entries that are not regular files must not block or read forever.
    "fifo-gzip-layer": (
        lambda s: s.replace_blob(s.packed.digest, fifo),
        "is a FIFO, not a regular file",
    ),
    "fifo-plain-layer": (
        lambda s: s.replace_blob(s.plain.digest, fifo),
        "is a FIFO, not a regular file",
    ),
    "fifo-config": (
        lambda s: s.replace_blob(s.image.config_digest, fifo),
        "is a FIFO, not a regular file",
    ),
    "fifo-manifest": (
        lambda s: s.replace_blob(s.image.digest, fifo),
        "is a FIFO, not a regular file",
    ),
    "fifo-index": (
        lambda s: s.replace_file("index.json", fifo),
        "index.json: is a FIFO, not a regular file",
    ),
    "fifo-oci-layout": (
        lambda s: s.replace_file("oci-layout", fifo),
        "oci-layout: is a FIFO, not a regular file",
    ),
    "urandom-gzip-layer": (
        lambda s: s.replace_blob(s.packed.digest, symlink_to("/dev/urandom")),
        "is a character device, not a regular file",
    ),
    "urandom-plain-layer": (
        lambda s: s.replace_blob(s.plain.digest, symlink_to("/dev/urandom")),
        "is a character device, not a regular file",
    ),
    "zero-config": (
        lambda s: s.replace_blob(s.image.config_digest, symlink_to("/dev/zero")),
        "is a character device, not a regular file",
    ),
    "zero-index": (
        lambda s: s.replace_file("index.json", symlink_to("/dev/zero")),
        "index.json: is a character device, not a regular file",
    ),
    "socket-layer": (
        lambda s: s.replace_blob(s.packed.digest, unix_socket),
        "is a socket, not a regular file",
    ),
    "directory-layer": (
        lambda s: s.replace_blob(s.plain.digest, lambda p: p.mkdir()),
        "is a directory, not a regular file",
    ),
    # Item 2: documents are capped while reading, judged by their size before any read.
    "sparse-2GiB-index": (
        lambda s: s.replace_file("index.json", sparse(TWO_GIB)),
        "index.json: too large (2147483648 bytes; the limit is 16777216)",
    ),
    "sparse-2GiB-config": (
        lambda s: s.replace_blob(s.image.config_digest, sparse(TWO_GIB)),
        "too large (2147483648 bytes; the limit is 16777216)",
    ),
    "sparse-2GiB-manifest": (
        lambda s: s.replace_blob(s.image.digest, sparse(TWO_GIB)),
        "too large (2147483648 bytes; the limit is 16777216)",
    ),
    "index-entry-claims-1TiB": (
        lambda s: _claim_size(s, 1 << 40),
        "document of 1099511627776 bytes is too large",
    ),
    # Item 3: nesting deep enough to overflow Python's parser is malformed, not a crash.
    "nested-index": (
        lambda s: (s.root / "index.json").write_bytes(nested(100_000)),
        "index.json: JSON nested too deeply",
    ),
    "nested-manifest": (
        lambda s: s.add_document(nested(100_000), OCI_MANIFEST),
        "JSON nested too deeply",
    ),
    "nested-config": (
        lambda s: manifest_with_config(s, nested(100_000)),
        "JSON nested too deeply",
    ),
    "deep-config": (
        lambda s: _deep_config(s, 300),
        "JSON nested deeper than 200 levels",
    ),
    # Item 6: a manifest is what its media type says, never what its shape suggests.
    "unknown-media-type": (
        lambda s: _unknown_type(s, "application/vnd.example.thing.v1+json"),
        "unsupported media type for an image manifest or index: "
        "'application/vnd.example.thing.v1+json'",
    ),
    "no-media-type-anywhere": (
        lambda s: _unknown_type(s, None),
        "unsupported media type for an image manifest or index: ''",
    ),
    # Found before: lies about digests and sizes.
    "layer-digest-lie": (
        lambda s: _flip_byte(s.blob(s.plain.digest)),
        "digest mismatch",
    ),
    "truncated-gzip-layer": (
        lambda s: s.blob(s.packed.digest).write_bytes(s.blob(s.packed.digest).read_bytes()[:-9]),
        "truncated",
    ),
}


def _claim_size(store: Store, size: int) -> None:
    doc = json.loads((store.root / "index.json").read_bytes())
    doc["manifests"][0]["size"] = size
    (store.root / "index.json").write_text(json.dumps(doc))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("output", ["file", "stdout"])
@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_hostile_store(tmp_path: Path, case: str, output: str) -> None:
    spoil, message = STORE_CASES[case]
    store = build_store(tmp_path / "store")
    spoil(store)
    before = snapshot(store.root)
    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    staging.mkdir()
    args = ["save", "-q", "--store", str(store.root), "--tmpdir", str(staging)]
    if case == "deep-config":  # the layout that re-encodes the config (its v1 json)
        args += ["--format", "docker-1.10"]
    if output == "file":
        args += ["-o", str(out / "o.tar")]
    result = run_bounded([*args, "app:1"])
    line = assert_one_error_line(result)
    assert message in line, line
    assert result.stdout == b""
    assert list(out.iterdir()) == [] and list(staging.iterdir()) == []
    assert snapshot(store.root) == before
    assert result.max_rss < MAX_RSS, f"peak RSS {result.max_rss >> 20} MiB"


# -- arguments ------------------------------------------------------------------------


def test_output_with_a_trailing_slash_names_a_directory(tmp_path: Path) -> None:
    """Item 7: ``-o DIR/`` is refused as cp and tar refuse it, existing or not."""
    store = build_store(tmp_path / "store")
    (tmp_path / "dir").mkdir()
    for target, message in [
        (f"{tmp_path}/dir/", f"hatchway: error: {tmp_path}/dir/ is a directory"),
        (
            f"{tmp_path}/new.tar/",
            f"hatchway: error: cannot write {tmp_path}/new.tar/: a trailing slash names a "
            "directory",
        ),
    ]:
        result = run_bounded(["save", "--store", str(store.root), "-o", target, "app:1"])
        assert assert_one_error_line(result) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "store"]
    assert list((tmp_path / "dir").iterdir()) == []


def test_store_that_is_a_file_says_so(tmp_path: Path) -> None:
    """Item 12: an archive given as ``--store`` is named for what it is, with the way to
    read archives."""
    archive = tmp_path / "images.tar"
    archive.write_bytes(b"\0" * 1024)
    result = run_bounded(["save", "--store", str(archive), "-o", str(tmp_path / "o.tar"), "a:1"])
    line = assert_one_error_line(result)
    assert line == (
        f"hatchway: error: store {archive}: is a file, not a store directory (an OCI image "
        f"layout); to read an archive, name it docker-archive:{archive} or use `hatchway load`"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tar"]


# -- the same layouts read as archives: load DIR, load oci:DIR -------------------------------

#: The store cases about a layout's files themselves (not its registry-like lies), which an
#: ``oci:DIR`` read must refuse as the store does: none may block on a FIFO or read a device.
LAYOUT_CASES = sorted(
    case
    for case in STORE_CASES
    if case.startswith(("fifo-", "urandom-", "zero-", "socket-", "directory-", "sparse-"))
)


@pytest.mark.parametrize("form", ["DIR", "oci:DIR"])
@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_hostile_layout_directory_loaded(tmp_path: Path, case: str, form: str) -> None:
    """An OCI layout directory given to ``load`` is opened as the store is: a FIFO as its
    ``index.json`` is refused at once (it used to hang, deaf to SIGTERM), and no image is
    stored (layers verified before a bad one may stay, as after a failed pull)."""
    spoil, message = STORE_CASES[case]
    layout = build_store(tmp_path / "layout")
    spoil(layout)
    before = snapshot(layout.root)
    target = tmp_path / "loaded"
    argument = form.replace("DIR", str(layout.root))
    result = run_bounded(["load", "-q", "--store", str(target), argument])
    line = assert_one_error_line(result)
    assert message in line, line
    assert result.stdout == b""
    index = target / "index.json"  # no store, or the empty one a new store starts as
    assert not index.exists() or json.loads(index.read_text())["manifests"] == []
    assert snapshot(layout.root) == before


@pytest.mark.parametrize(
    "command",
    [
        ["verify", "ARCHIVE"],
        ["load", "--store", "STORE", "ARCHIVE"],
        ["save", "-o", "OUT", "docker-archive:ARCHIVE"],
    ],
)
def test_a_device_is_no_archive(tmp_path: Path, command: list[str]) -> None:
    """``/dev/zero`` given as an archive is refused at once; it was copied into the temp
    directory until the disk was full.  A FIFO is still read: it is a stream that ends."""
    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    out.mkdir()

    def args(archive: str) -> list[str]:
        filled = [
            a.replace("ARCHIVE", archive)
            .replace("STORE", str(tmp_path / "s"))
            .replace("OUT", str(out / "o.tar"))
            for a in command
        ]
        return [filled[0], "-q", "--tmpdir", str(staging), *filled[1:]]

    # Should it copy /dev/zero again, the child is killed at 64 MiB, not at a full disk.
    result = run_bounded(args("/dev/zero"), deadline=10, max_file_size=64 << 20)
    line = assert_one_error_line(result)
    assert line == "hatchway: error: /dev/zero: is a character device, not an archive"
    assert list(staging.iterdir()) == [] and list(out.iterdir()) == []
    assert not (tmp_path / "s").exists()
    store = build_store(tmp_path / "store")
    archive = tmp_path / "good.tar"
    saved = run_bounded(["save", "-q", "--store", str(store.root), "-o", str(archive), "app:1"])
    assert saved.returncode == 0, saved.stderr
    fifo(tmp_path / "fifo.tar")
    feeder = threading.Thread(
        target=lambda: (tmp_path / "fifo.tar").write_bytes(archive.read_bytes()), daemon=True
    )
    feeder.start()
    streamed = run_bounded(args(str(tmp_path / "fifo.tar")))
    feeder.join(timeout=10)
    assert streamed.returncode == 0, streamed.stderr
    assert list(staging.iterdir()) == []


def _endless(path: Path, chunk: bytes) -> None:
    """Feed ``chunk`` into the FIFO at ``path`` again and again, until its reader leaves."""
    with contextlib.suppress(BrokenPipeError, OSError), path.open("wb") as pipe:
        while True:
            pipe.write(chunk)


def _gzip_of_zeros(path: Path, size: int) -> None:
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for _ in range(size >> 20):
            out.write(packer.compress(bytes(1 << 20)))
        out.write(packer.flush())


@pytest.mark.parametrize(
    ("feed", "reason"),
    [
        ("zeros", "not a tar archive (no members)"),
        ("random", "not a tar archive (no tar header at its start)"),
        ("gzip-bomb", "not a tar archive in the gzip data (no members)"),
    ],
)
def test_a_stream_that_is_no_tar_is_refused_at_its_first_block(
    tmp_path: Path, feed: str, reason: str
) -> None:
    """A stream (stdin, a FIFO) or a compressed archive is unpacked into the temp directory
    before it is indexed: endless zeros, random bytes or a gzip bomb of zeros were copied until
    the disk was full.  What is unpacked must start with a tar header."""
    staging = tmp_path / "staging"
    staging.mkdir()
    source = tmp_path / "in"
    if feed == "gzip-bomb":
        _gzip_of_zeros(source, 256 << 20)
    else:
        fifo(source)
        chunk = bytes(1 << 16) if feed == "zeros" else os.urandom(1 << 16)
        threading.Thread(target=_endless, args=(source, chunk), daemon=True).start()
    result = run_bounded(
        ["verify", "-q", "--tmpdir", str(staging), str(source)],
        deadline=20,
        max_file_size=64 << 20,  # a regression is killed here, not at a full disk
    )
    assert assert_one_error_line(result) == f"hatchway: error: {source}: {reason}"
    assert list(staging.iterdir()) == []
