"""Registry layers written straight into ``-o FILE``: while an image's config is fetched, idle
connections read its gzip layers' trailers (their uncompressed sizes), so the archive can be
planned up front and nothing is staged.  A registry that lies about a trailer changes no byte
of the result; only a save that can write in place asks at all, and only for an image big
enough to be worth it (``PEEK_MIN``, lowered here: the lab's images are small)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import hatchway
from hatchway.transports.registry import source as registry_source
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.registry_support import Lab, options
from tests.support import StagingWatch, files_under

pytestmark = [pytest.mark.anyio, pytest.mark.peers]

NAMES = ["hw/family-a:1", "hw/family-c:1", "hw/big:1"]


@pytest.fixture
def proxy(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    # A loaded machine must not turn "in place" into "staged": wait for every trailer.
    monkeypatch.setattr(registry_source, "PEEK_GRACE", 10.0)
    monkeypatch.setattr(registry_source, "PEEK_MIN", 0)  # the lab's images are small
    with fault_proxy(lab.registry.port) as p:
        p.reset(latency=0.01)
        yield p


def _names(proxy: FaultProxy) -> list[str]:
    return [f"docker://{proxy.host}/{n}" for n in NAMES]


async def _streamed(proxy: FaultProxy, tmp_path: Path) -> bytes:
    """The same archive written to a stream: always staged, never in place."""
    with (tmp_path / "stream.tar").open("wb") as out:
        await hatchway.save(_names(proxy), out.fileno(), registry=options())
    return (tmp_path / "stream.tar").read_bytes()


async def test_registry_layers_go_straight_into_the_archive(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    watch = StagingWatch(tmp_path / "stage")
    await hatchway.save(
        _names(proxy), tmp_path / "o.tar", registry=options(), tmpdir=watch.stage, progress=watch
    )
    assert watch.never_staged  # nothing staged while layers moved
    assert proxy.faults.peeks  # the trailers were read ...
    fetched = proxy.blob_requests()
    assert fetched and max(fetched.values()) == 1  # ... and each layer fetched once besides
    assert (tmp_path / "o.tar").read_bytes() == await _streamed(proxy, tmp_path)


async def test_only_a_save_that_can_write_in_place_reads_trailers(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    await _streamed(proxy, tmp_path)
    await hatchway.save(_names(proxy), tmp_path / "o.tar.gz", registry=options())
    await hatchway.pull(_names(proxy), store=tmp_path / "store", registry=options())
    assert proxy.faults.peeks == []


async def test_a_small_image_is_staged_without_asking(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_source, "PEEK_MIN", 16 << 20)  # the default
    await hatchway.save(_names(proxy)[:2], tmp_path / "o.tar", registry=options())
    assert proxy.faults.peeks == []


class _LyingTrailers(httpx.AsyncBaseTransport):
    """The registry's own answers, except that every 4-byte range says "12345 bytes"."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lies = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        wanted = request.headers.get("range", "")
        start, _, end = wanted.removeprefix("bytes=").partition("-")
        if start.isdigit() and end.isdigit() and int(end) - int(start) == 3:
            self.lies += 1
            lie = (12345).to_bytes(4, "little")
            return httpx.Response(206, content=lie, headers={"content-range": f"{wanted}/*"})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_registry_that_lies_about_trailers_changes_no_byte(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    liar = _LyingTrailers()
    with anyio.fail_after(60):
        await hatchway.save(_names(proxy), tmp_path / "o.tar", registry=options(transport=liar))
    await liar.aclose()
    assert liar.lies  # the sizes were wrong: the archive was planned again, from what arrived
    assert (tmp_path / "o.tar").read_bytes() == await _streamed(proxy, tmp_path)
    leftovers = [p for p in files_under(tmp_path) if p.startswith(".") or "/." in p]
    assert leftovers == []
