"""A bundle server: hatchway embedded in an ASGI application (Starlette).

    GET /bundle?image=NAME&image=NAME...[&compress=zstd|gzip]   → a docker-save archive
    GET /healthz                             → {"ok": true, "saves": N, "cancelled": N}

Run it under trio (hypercorn) or asyncio (uvicorn) — the same code serves both:

    pip install -e '.[examples]'
    HATCHWAY_STORE=sample/store hypercorn --worker-class trio docs.examples.bundle_server:app
    HATCHWAY_STORE=sample/store uvicorn docs.examples.bundle_server:app
    curl -s 'http://127.0.0.1:8000/bundle?image=sample/app:2.0' | docker load

What it shows (docs/api.md, "Embedding"):

* one :class:`hatchway.Session` for the whole process: every request shares registry
  connections, tokens and in-flight layer fetches with the requests running beside it;
* a name that does not resolve gets a 4xx JSON error *before the first byte*: hatchway
  resolves, fetches and verifies everything before it writes to a stream, so the response
  status is chosen only once the first archive byte exists;
* at most ``HATCHWAY_MAX_SAVES`` saves run at once (default 4); further requests wait;
* a client that disconnects mid-stream cancels its save, which removes its staging area;
* the event loop stays responsive while archives are built (hatchway does its CPU work in
  worker threads), so ``/healthz`` answers at once during a large save.

Environment: ``HATCHWAY_STORE`` (the local store), ``HATCHWAY_MAX_SAVES``,
``HATCHWAY_TMPDIR`` (staging; default the system temp dir), ``HATCHWAY_INSECURE_REGISTRY``
(comma-separated hosts reached over plain HTTP).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import hatchway

#: Status codes for the errors a client caused (everything else is the server's: 502/500).
CLIENT_ERRORS: dict[type[hatchway.HatchwayError], int] = {
    hatchway.InvalidReference: 400,
    hatchway.NoSuchImage: 404,
    hatchway.AmbiguousReference: 409,
    hatchway.PlatformNotFound: 404,
}


class Bundles:
    """The server's state: one session, one limit on concurrent saves."""

    def __init__(self) -> None:
        insecure = os.environ.get("HATCHWAY_INSECURE_REGISTRY", "")
        registry = hatchway.RegistryOptions(
            insecure_registries=frozenset(h for h in insecure.split(",") if h)
        )
        self.session = hatchway.Session(store=os.environ.get("HATCHWAY_STORE"), registry=registry)
        self.limit = anyio.CapacityLimiter(int(os.environ.get("HATCHWAY_MAX_SAVES", "4")))
        self.tmpdir = os.environ.get("HATCHWAY_TMPDIR")
        self.running = 0
        self.cancelled = 0


class _Chunks(anyio.abc.ByteSendStream):
    """The archive's bytes, handed to the response through a small memory stream."""

    def __init__(self, send: MemoryObjectSendStream[bytes]) -> None:
        self._send = send

    async def send(self, item: bytes) -> None:
        await self._send.send(item)

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()


class BundleResponse:
    """An ASGI response that runs one save and streams its archive to the client."""

    def __init__(self, bundles: Bundles, names: list[str], compress: str) -> None:
        self.bundles = bundles
        self.names = names
        self.compress = compress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks_in, chunks_out = anyio.create_memory_object_stream[bytes](4)
        failure: list[hatchway.HatchwayError] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._save, chunks_in, failure)
            tg.start_soon(self._watch_disconnect, receive, tg.cancel_scope)
            async with chunks_out:
                first = await _next(chunks_out)
                if first is None:
                    await _error_response(send, failure[0] if failure else None)
                else:
                    await self._stream(send, first, chunks_out)
            tg.cancel_scope.cancel()  # the disconnect watcher

    async def _save(
        self, chunks: MemoryObjectSendStream[bytes], failure: list[hatchway.HatchwayError]
    ) -> None:
        bundles = self.bundles
        async with chunks, bundles.limit:
            bundles.running += 1
            try:
                await bundles.session.save(
                    self.names, _Chunks(chunks), tmpdir=bundles.tmpdir, compression=self.compress
                )
            except hatchway.HatchwayError as exc:
                failure.append(exc)
            except anyio.get_cancelled_exc_class():
                bundles.cancelled += 1  # the client hung up
                raise
            finally:
                bundles.running -= 1

    async def _stream(
        self, send: Send, first: bytes, rest: MemoryObjectReceiveStream[bytes]
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", _CONTENT_TYPES[self.compress]),
                    (b"content-disposition", _DISPOSITIONS[self.compress]),
                ],
            }
        )
        await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in rest:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()  # the save is cancelled: its staging area is removed
                return


async def _next(stream: MemoryObjectReceiveStream[bytes]) -> bytes | None:
    try:
        return await stream.receive()
    except anyio.EndOfStream:
        return None


async def _error_response(send: Send, error: hatchway.HatchwayError | None) -> None:
    status = next((s for t, s in CLIENT_ERRORS.items() if isinstance(error, t)), 502)
    body: dict[str, Any] = {"error": str(error) if error else "the save produced no archive"}
    if error is not None:
        body["kind"] = type(error).__name__
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_CONTENT_TYPES = {
    "none": b"application/x-tar",
    "gzip": b"application/gzip",
    "zstd": b"application/zstd",
}
_DISPOSITIONS = {
    "none": b'attachment; filename="bundle.tar"',
    "gzip": b'attachment; filename="bundle.tar.gz"',
    "zstd": b'attachment; filename="bundle.tar.zst"',
}


async def bundle(request: Request) -> Any:
    names = request.query_params.getlist("image")
    if not names:
        return JSONResponse({"error": "name at least one image: ?image=NAME"}, status_code=400)
    compress = request.query_params.get("compress", "none")
    if compress not in _CONTENT_TYPES:
        return JSONResponse({"error": "compress is zstd, gzip or none"}, status_code=400)
    return BundleResponse(request.app.state.bundles, names, compress)


async def healthz(request: Request) -> JSONResponse:
    bundles = request.app.state.bundles
    return JSONResponse({"ok": True, "saves": bundles.running, "cancelled": bundles.cancelled})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.bundles = Bundles()
    async with app.state.bundles.session:
        yield


app = Starlette(
    routes=[Route("/bundle", bundle), Route("/healthz", healthz)],
    lifespan=lifespan,
)
