"""A fault-injecting TCP proxy on 127.0.0.1, for registry tests and benchmarks.

It runs its own event loop in a background thread (``anyio.from_thread.start_blocking_portal``),
so it serves the same way whatever backend the test under it uses.  Between a client and an
upstream HTTP server it can add:

* ``latency`` — one-way delay in seconds, each direction, as a delay line (throughput is not
  divided by it: bytes in flight stay in flight);
* ``bandwidth`` — a cap in bytes per second per connection, in each direction;
* ``fail_next`` — answer the next N requests ``503`` itself (``fail_status`` to change it),
  with a distribution error body, then close the connection; with ``fail_only`` only requests
  whose ``METHOD path`` contains it count, and the first ``fail_skip`` of those pass;
* ``drop_after`` — cut the connection after ``drop_after`` bytes of a blob GET's response, for
  the next ``drop_times`` responses long enough to be cut;
* ``strip_range`` — remove ``Range`` headers (a server that cannot resume);
* ``cut_upload_after`` — cut the connection after ``cut_upload_after`` bytes of an upload's
  request body (a ``PATCH`` or ``PUT`` to ``/blobs/uploads/``), for the next ``cut_times``
  uploads long enough to be cut: the registry sees a body that ends early, the client a
  connection that breaks while it sends.

It parses request heads and frames request bodies (``Content-Length`` or chunked) to count
requests: ``requests`` lists ``(method, path)`` in arrival order; ``peak_connections`` is the
most client connections open at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.from_thread import start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

_PIECE = 64 << 10
_FAIL_BODY = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy"}]}'


@dataclass
class Faults:
    latency: float = 0.0
    bandwidth: float | None = None
    fail_next: int = 0
    fail_status: int = 503
    fail_only: str = ""
    fail_skip: int = 0
    drop_after: int | None = None
    drop_times: int = 0
    strip_range: bool = False
    cut_upload_after: int | None = None
    cut_times: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    injected: int = 0
    dropped: int = 0
    ranged: int = 0
    peeks: list[str] = field(default_factory=list)  # paths asked for 4 bytes (a gzip trailer)
    cut: int = 0
    peak_connections: int = 0


class _Connection:
    def __init__(self) -> None:
        self.drop_budget: int | None = None
        self.closing = False


class FaultProxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``upstream_port`` with :class:`Faults`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults = Faults()
        self._lock = threading.Lock()
        self.port = 0
        self.host = ""
        self._active = 0

    def reset(self, **changes: object) -> Faults:
        """Fresh faults (and counters) for the next run."""
        with self._lock:
            self.faults = Faults(**changes)  # type: ignore[arg-type]
            return self.faults

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no client connection is open (the last run's have all closed)."""
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._active:
            raise AssertionError(f"{self._active} connections still open after {timeout:g} s")

    def count(self, method: str, fragment: str = "") -> int:
        """Requests with ``method`` whose path contains ``fragment``."""
        return sum(1 for m, path in self.faults.requests if m == method and fragment in path)

    def blob_requests(self, peeks: bool = False) -> dict[str, int]:
        """GET requests per blob digest (across repositories); without the requests for a
        gzip trailer's 4 bytes unless ``peeks``."""
        counts: dict[str, int] = {}
        for method, path in self.faults.requests:
            if method == "GET" and "/blobs/sha256:" in path:
                digest = path.rsplit("/", 1)[1]
                counts[digest] = counts.get(digest, 0) + 1
        for path in () if peeks else self.faults.peeks:
            digest = path.rsplit("/", 1)[1]
            counts[digest] -= 1
            if not counts[digest]:
                del counts[digest]
        return counts

    async def serve(self, task_status: anyio.abc.TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started(port)
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        with self._lock:
            self._active += 1
            self.faults.peak_connections = max(self.faults.peak_connections, self._active)
        try:
            await self._serve_connection(client)
        finally:
            with self._lock:
                self._active -= 1

    async def _serve_connection(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                return
            async with upstream:
                conn = _Connection()
                up_send, up_recv = anyio.create_memory_object_stream[tuple[float, bytes]](1000)
                down_send, down_recv = anyio.create_memory_object_stream[tuple[float, bytes]](1000)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._requests, client, up_send, down_send, conn, tg)
                    tg.start_soon(self._deliver, up_recv, upstream, self.faults.bandwidth, None)
                    tg.start_soon(self._responses, upstream, down_send, conn)
                    tg.start_soon(self._deliver, down_recv, client, self.faults.bandwidth, tg)

    async def _requests(
        self,
        client: anyio.abc.SocketStream,
        up: MemoryObjectSendStream[tuple[float, bytes]],
        down: MemoryObjectSendStream[tuple[float, bytes]],
        conn: _Connection,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        buffer = b""
        async with up:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = await client.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        tg.cancel_scope.cancel()
                        return
                    buffer += data
                    if not buffer[:1].isalpha():
                        # Not HTTP (a TLS ClientHello: skopeo tries HTTPS first): pass it on
                        # untouched so the upstream can refuse it at once.
                        await self._passthrough(client, buffer, up)
                        return
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = [*lines[0].split(" "), "", ""][:2]
                faults = self.faults
                with self._lock:
                    faults.requests.append((method, path))
                    ranges = [ln[6:] for ln in lines if ln.lower().startswith("range:")]
                    if ranges:
                        faults.ranged += 1
                        if _four_bytes(ranges[0]):
                            faults.peeks.append(path)
                    inject = faults.fail_next > 0 and faults.fail_only in f"{method} {path}"
                    if inject and faults.fail_skip > 0:
                        faults.fail_skip -= 1
                        inject = False
                    if inject:
                        faults.fail_next -= 1
                        faults.injected += 1
                    drop = (
                        faults.drop_after is not None
                        and faults.drop_times > 0
                        and "/blobs/" in path
                        and method == "GET"
                    )
                if inject:
                    reply = (
                        f"HTTP/1.1 {faults.fail_status} Injected\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(_FAIL_BODY)}\r\n"
                        "Connection: close\r\n\r\n"
                    ).encode() + _FAIL_BODY
                    await down.send((anyio.current_time() + faults.latency, reply))
                    await down.aclose()
                    return
                if faults.strip_range:
                    lines = [ln for ln in lines if not ln.lower().startswith("range:")]
                conn.drop_budget = faults.drop_after if drop else None
                data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                await up.send((anyio.current_time() + faults.latency, data))
                headers = _headers(lines)
                cut = None
                if method in ("PATCH", "PUT") and "/blobs/uploads/" in path:
                    cut = faults.cut_upload_after
                body = _Body(client, buffer, up, faults.latency, cut, self._take_cut)
                try:
                    if "chunked" in headers.get("transfer-encoding", "").lower():
                        await body.chunked()
                    else:
                        await body.forward(int(headers.get("content-length") or 0))
                except _Cut:
                    tg.cancel_scope.cancel()
                    return
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    tg.cancel_scope.cancel()
                    return
                buffer = body.buffer

    async def _passthrough(
        self,
        client: anyio.abc.SocketStream,
        buffer: bytes,
        up: MemoryObjectSendStream[tuple[float, bytes]],
    ) -> None:
        while True:
            await up.send((anyio.current_time() + self.faults.latency, buffer))
            try:
                buffer = await client.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return

    async def _responses(
        self,
        upstream: anyio.abc.SocketStream,
        down: MemoryObjectSendStream[tuple[float, bytes]],
        conn: _Connection,
    ) -> None:
        async with down:
            while True:
                try:
                    data = await upstream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return
                if conn.drop_budget is not None:
                    if len(data) >= conn.drop_budget and self._take_drop():
                        data = data[: conn.drop_budget]
                        await down.send((anyio.current_time() + self.faults.latency, data))
                        return
                    conn.drop_budget -= len(data)
                await down.send((anyio.current_time() + self.faults.latency, data))

    def _take_cut(self) -> bool:
        """Count one cut upload, if the budget of cuts allows it."""
        with self._lock:
            if self.faults.cut_times <= 0:
                return False
            self.faults.cut_times -= 1
            self.faults.cut += 1
            return True

    def _take_drop(self) -> bool:
        """Count one cut, if the budget of cuts allows it."""
        with self._lock:
            if self.faults.drop_times <= 0:
                return False
            self.faults.drop_times -= 1
            self.faults.dropped += 1
            return True

    async def _deliver(
        self,
        queue: MemoryObjectReceiveStream[tuple[float, bytes]],
        target: anyio.abc.SocketStream,
        bandwidth: float | None,
        tg: anyio.abc.TaskGroup | None,
    ) -> None:
        """Send queued data when due; ``tg`` (the response direction) is cancelled when the
        queue ends, which closes the connection once every byte was delivered."""
        next_free = 0.0
        async with queue:
            async for due, data in queue:
                delay = due - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                for start in range(0, len(data), _PIECE):
                    piece = data[start : start + _PIECE]
                    if bandwidth:
                        now = anyio.current_time()
                        # A token bucket with a little burst credit, so that oversleeping
                        # one piece is made up on the next instead of lowering the rate.
                        next_free = max(next_free, now - 0.05) + len(piece) / bandwidth
                        if next_free > now:
                            await anyio.sleep(next_free - now)
                    try:
                        await target.send(piece)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        if tg is not None:
                            tg.cancel_scope.cancel()
                        return
        # The source ended (EOF, an injected reply or a drop): close the whole connection.
        if tg is not None:
            tg.cancel_scope.cancel()


class _Cut(Exception):
    """The proxy cut an upload's body short on purpose."""


def _headers(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


class _Body:
    """Forwards one request body upstream as it arrives (framed by length or chunks), cutting
    the connection after ``cut`` bytes when ``take_cut()`` allows it."""

    def __init__(
        self,
        client: anyio.abc.SocketStream,
        buffer: bytes,
        up: MemoryObjectSendStream[tuple[float, bytes]],
        latency: float,
        cut: int | None,
        take_cut: Callable[[], bool],
    ) -> None:
        self.client = client
        self.buffer = buffer
        self.up = up
        self.latency = latency
        self.cut = cut
        self.take_cut = take_cut
        self.sent = 0

    async def forward(self, n: int) -> None:
        while n > 0:
            if not self.buffer:
                self.buffer = await self.client.receive()
            piece, self.buffer = self.buffer[:n], self.buffer[n:]
            n -= len(piece)
            await self._send(piece)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self.buffer += await self.client.receive()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        await self._send(line + b"\r\n")
        return line

    async def chunked(self) -> None:
        while True:
            size = int((await self.line()).split(b";")[0] or b"0", 16)
            if size == 0:
                while await self.line():
                    pass  # trailers, up to the empty line
                return
            await self.forward(size)
            await self.line()

    async def _send(self, piece: bytes) -> None:
        if self.cut is not None and self.sent + len(piece) > self.cut and self.take_cut():
            keep = piece[: max(0, self.cut - self.sent)]
            if keep:
                await self.up.send((anyio.current_time() + self.latency, keep))
            raise _Cut
        self.sent += len(piece)
        await self.up.send((anyio.current_time() + self.latency, piece))


@contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` in a background thread for the duration of the block."""
    proxy = FaultProxy(upstream_port)
    with start_blocking_portal("asyncio") as portal:
        future, port = portal.start_task(proxy.serve)
        proxy.port = port
        proxy.host = f"127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            future.cancel()


def _four_bytes(spec: str) -> bool:
    """Whether a ``Range`` header asks for exactly 4 bytes (``bytes=N-N+3``)."""
    start, _, end = spec.strip().removeprefix("bytes=").partition("-")
    return start.isdigit() and end.isdigit() and int(end) - int(start) == 3
