"""LayerDecoder's split step: one gzip layer inflated on this thread, hashed and written on a
helper — the same bytes and checks as one thread, and nothing left running on any exit."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading

import pytest

from hatchway.decode import LayerDecoder
from hatchway.errors import DigestMismatch, OutputError
from hatchway.model import Compression, Descriptor, Layer

# ~13 MB of hex digits: gzip keeps about half, so a blob of several CHUNK_SIZE reads.
CONTENT = b"".join(hashlib.sha256(b"%d" % i).hexdigest().encode() + b"\n" for i in range(200_000))


def _layer(content: bytes = CONTENT, diff_id: str | None = None) -> tuple[Layer, bytes]:
    blob = gzip.compress(content, compresslevel=1)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, len(blob))
    diff = diff_id or "sha256:" + hashlib.sha256(content).hexdigest()
    return Layer(descriptor, diff, Compression.GZIP), blob


def _helpers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hatchway-decode"]


@pytest.mark.parametrize("split", [False, True])
def test_a_split_step_writes_and_checks_what_one_thread_does(split: bool) -> None:
    layer, blob = _layer()
    out = io.BytesIO()
    decoder = LayerDecoder(layer, out, store="test")
    source = io.BytesIO(blob)
    while decoder.feed_file(source, 1 << 20, split=split):  # several steps, several helpers
        pass
    assert decoder.finish() == len(CONTENT)
    assert out.getvalue() == CONTENT
    assert _helpers() == []


def test_a_wrong_diff_id_is_still_caught_after_a_split_step() -> None:
    layer, blob = _layer(diff_id="sha256:" + "0" * 64)
    decoder = LayerDecoder(layer, io.BytesIO(), store="test")
    decoder.feed_file(io.BytesIO(blob), len(blob), split=True)
    with pytest.raises(DigestMismatch):
        decoder.finish()


class _FullDisk(io.BytesIO):
    def write(self, data: object) -> int:
        raise OSError(28, "No space left on device")


def test_a_write_failing_on_the_helper_is_raised_by_the_step() -> None:
    layer, blob = _layer()
    decoder = LayerDecoder(layer, _FullDisk(), store="test")
    with pytest.raises(OutputError, match="No space left"):
        decoder.feed_file(io.BytesIO(blob), len(blob), split=True)
    assert _helpers() == []


def test_a_cancelled_step_stops_and_leaves_no_helper() -> None:
    layer, blob = _layer()
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # what a cancellation looks like from the worker's side

    decoder = LayerDecoder(layer, io.BytesIO(), store="test")
    with pytest.raises(KeyboardInterrupt):
        decoder.feed_file(io.BytesIO(blob), len(blob), checkpoint, split=True)
    assert decoder.consumed == 2 * (1 << 20)
    assert _helpers() == []


def test_the_stored_form_is_written_and_the_diff_id_still_checked() -> None:
    """Keeping a layer as stored (a store, a registry), the decoder writes the stored bytes
    through and checks the inflated content against the diffID all the same."""
    layer, blob = _layer()
    out = io.BytesIO()
    decoder = LayerDecoder(layer, out, store="test", decompress=False)
    decoder.feed_file(io.BytesIO(blob), len(blob))
    assert decoder.finish() == len(blob)
    assert out.getvalue() == blob
    wrong, blob = _layer(diff_id="sha256:" + "0" * 64)
    decoder = LayerDecoder(wrong, io.BytesIO(), store="test", decompress=False)
    decoder.feed_file(io.BytesIO(blob), len(blob))
    with pytest.raises(DigestMismatch, match="config diff_id"):
        decoder.finish()
