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
  worker threads), so ``/healthz`` answers at once during a large save;
* a web client names images, never files: names of the store only, and ``docker://`` names
  only of the registries the operator allows — an archive transport
  (``docker-archive:/etc/...``, ``oci:/``) would let any client read, or probe, the server's
  files, and an arbitrary ``docker://`` host would make the server fetch from anywhere;
* a client that stops reading does not hold a save slot for ever: a piece of the archive it
  has not taken within ``HATCHWAY_SEND_TIMEOUT`` seconds ends its response.

Environment: ``HATCHWAY_STORE`` (the local store), ``HATCHWAY_MAX_SAVES``,
``HATCHWAY_TMPDIR`` (staging; default the system temp dir), ``HATCHWAY_REGISTRIES``
(comma-separated registry hosts whose ``docker://`` names are served; default none),
``HATCHWAY_INSECURE_REGISTRY`` (comma-separated hosts reached over plain HTTP),
``HATCHWAY_SEND_TIMEOUT`` (default 30).
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
        registry = hatchway.RegistryOptions(
            insecure_registries=frozenset(_listed("HATCHWAY_INSECURE_REGISTRY"))
        )
        self.session = hatchway.Session(store=os.environ.get("HATCHWAY_STORE"), registry=registry)
        self.limit = anyio.CapacityLimiter(int(os.environ.get("HATCHWAY_MAX_SAVES", "4")))
        self.tmpdir = os.environ.get("HATCHWAY_TMPDIR")
        self.registries = frozenset(_listed("HATCHWAY_REGISTRIES"))
        self.send_timeout = float(os.environ.get("HATCHWAY_SEND_TIMEOUT", "30"))
        self.running = 0
        self.cancelled = 0


def _listed(variable: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(",") if item.strip()]


#: The transports that name files or directories of the server's own machine.
_PATH_TRANSPORTS = ("docker-archive:", "oci-archive:", "oci:")


def refused(name: str, registries: frozenset[str]) -> str | None:
    """Why a web client may not have ``name`` (``None``: it may)."""
    if name.startswith(_PATH_TRANSPORTS):
        return f"{name.split(':', 1)[0]}: names a file of the server; ask for images by name"
    if name.startswith("docker://"):
        host = _registry_host(name.removeprefix("docker://"))
        if host not in registries:
            return f"registry {host} is not served here"
    return None


def _registry_host(reference: str) -> str:
    """The registry a ``docker://`` reference names (Docker's rule: a first component with
    a dot or a port, or ``localhost``, is a host; otherwise it is Docker Hub)."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


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
        #: The save, cancelled when the client hangs up or stops reading.
        self._save_scope = anyio.CancelScope()
        #: When the piece being sent was handed to the server (``None``: none is).
        self._sending_since: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks_in, chunks_out = anyio.create_memory_object_stream[bytes](4)
        failure: list[hatchway.HatchwayError] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._save, chunks_in, failure)
            tg.start_soon(self._watch_disconnect, receive, tg.cancel_scope)
            tg.start_soon(self._watch_stall, tg.cancel_scope)
            async with chunks_out:
                first = await _next(chunks_out)
                if first is None:
                    await _error_response(send, failure[0] if failure else None)
                else:
                    await self._stream(send, first, chunks_out)
            tg.cancel_scope.cancel()  # the watchers

    async def _save(
        self, chunks: MemoryObjectSendStream[bytes], failure: list[hatchway.HatchwayError]
    ) -> None:
        bundles = self.bundles
        async with chunks, bundles.limit:
            bundles.running += 1
            try:
                with self._save_scope:
                    await bundles.session.save(
                        self.names,
                        _Chunks(chunks),
                        tmpdir=bundles.tmpdir,
                        compression=self.compress,
                    )
            except hatchway.HatchwayError as exc:
                failure.append(exc)
            except anyio.get_cancelled_exc_class():
                bundles.cancelled += 1  # the client hung up
                raise
            else:
                if self._save_scope.cancelled_caught:
                    bundles.cancelled += 1  # the client stopped reading
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
        await self._send_body(send, first, more=True)
        async for chunk in rest:
            await self._send_body(send, chunk, more=True)
        await self._send_body(send, b"", more=False)

    async def _send_body(self, send: Send, body: bytes, *, more: bool) -> None:
        self._sending_since = anyio.current_time()
        await send({"type": "http.response.body", "body": body, "more_body": more})
        self._sending_since = None

    async def _watch_stall(self, response: anyio.CancelScope) -> None:
        """A client that stops reading would hold its save slot for ever: once a piece has
        waited ``send_timeout`` seconds, the save is cancelled (its slot and staging area freed)
        and so is the response.  The save has its own scope: some servers (hypercorn) shield
        the send itself, which then waits for the client to hang up — holding no slot."""
        timeout = self.bundles.send_timeout
        while True:
            await anyio.sleep(min(1.0, timeout / 4))
            since = self._sending_since
            if since is not None and anyio.current_time() - since > timeout:
                self._save_scope.cancel()
                response.cancel()
                return

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
    bundles = request.app.state.bundles
    for name in names:
        reason = refused(name, bundles.registries)
        if reason is not None:
            return JSONResponse({"error": reason, "kind": "Refused"}, status_code=403)
    return BundleResponse(bundles, names, compress)


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
