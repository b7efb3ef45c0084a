"""Putting blobs into a registry repository: the blob half of the distribution spec's push.

(https://github.com/opencontainers/distribution-spec/blob/main/spec.md#push)  On the
client's connection slots, authorisation (token scope ``repository:NAME:pull,push``) and
:class:`~hatchway.transports.registry.options.RetryPolicy`:

* :meth:`BlobUploader.exists` — ``HEAD /v2/R/blobs/D``: 200 yes, 404 no.
* :meth:`BlobUploader.mount` — ``POST /v2/R/blobs/uploads/?mount=D&from=S`` (with ``pull`` on
  ``S`` too): 201 means the registry linked its copy into ``R``; 202 means it opened an upload
  session instead (it cannot or may not mount), which is cancelled — the caller uploads.
* :meth:`BlobUploader.upload` — ``POST /v2/R/blobs/uploads/`` opens a session (202 and a
  ``Location``); a blob up to ``UPLOAD_MONOLITHIC_MAX`` then goes up in one
  ``PUT Location?digest=D`` with the body, a larger one in ``PATCH`` chunks (``Content-Range``,
  each answered with the next ``Location`` and the ``Range`` held) closed by a bodiless
  ``PUT ?digest=D``.

Faults: a broken chunk (connection lost, 429/502/503/504, a refused range) is resumed where the
registry says it holds (``GET Location`` → 204 ``Range: 0-N``); a session that is gone, a
broken monolithic upload, or a final ``PUT`` refused as ``DIGEST_INVALID`` is restarted from a
fresh ``POST``.  Failures without progress count against the retry budget; progress resets it.

Integrity: the blob is staged in a local file whose digest is already known (the engine
verified the bytes, or the encoder produced them), so the only commit ever sent is
``?digest=`` of exactly those bytes; the registry hashes what it received and refuses a
mismatch, and the digest it reports back must be the one sent.  Nothing is tagged here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import httpx

from hatchway.errors import RegistryError, StoreError
from hatchway.files import open_regular
from hatchway.limits import CHUNK_SIZE, UPLOAD_CHUNK, UPLOAD_MONOLITHIC_MAX
from hatchway.transports.registry.client import RegistryClient
from hatchway.transports.registry.protocol import parse_upload_range, pull_scope, push_scope

T = TypeVar("T")
#: Registry error codes that mean "this session is lost or holds the wrong bytes: start over".
_RESTART_CODES = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "DIGEST_INVALID"})


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """A blob in a local file (``path``) whose ``digest`` and ``size`` are known."""

    path: str
    digest: str
    size: int


class _Broken(Exception):
    """An attempt failed in a way that another attempt may fix (internal)."""

    def __init__(
        self, error: RegistryError, retry_after: float | None = None, restart: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.restart = restart


class _Budget:
    """The retry budget of one upload: failures in a row without progress."""

    def __init__(self, client: RegistryClient) -> None:
        self.policy = client.options.retry
        self.failures = 0
        self.best = -1

    async def spend(self, broken: _Broken, progress: int) -> None:
        if progress > self.best:
            self.best, self.failures = progress, 0
        if self.failures >= self.policy.retries:
            raise broken.error from None
        await self.policy.sleep(self.policy.delay(self.failures, broken.retry_after))
        self.failures += 1


class BlobUploader:
    """Blob requests to the repositories of one registry, through ``client``."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        monolithic_max: int | None = None,
        chunk: int | None = None,
    ) -> None:
        self.client = client
        self.monolithic_max = UPLOAD_MONOLITHIC_MAX if monolithic_max is None else monolithic_max
        self.chunk = UPLOAD_CHUNK if chunk is None else chunk

    async def exists(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` holds the blob ``digest``."""

        async def attempt() -> bool:
            async with self._request("HEAD", f"/v2/{repository}/blobs/{digest}", repository) as r:
                if r.status_code in (200, 404):
                    return r.status_code == 200
                raise await self._failure(r, repository, f"blob {digest}")

        return await self._retrying(attempt, repository, f"blob {digest}")

    async def mount(self, repository: str, digest: str, source: str) -> bool:
        """Link the blob from ``source`` (same registry) into ``repository``; ``False`` when
        the registry would not (the caller uploads it instead)."""
        url = f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}"
        scopes = (push_scope(repository), pull_scope(source))
        what = f"mount of blob {digest} from {source}"

        async def attempt() -> str | None:
            async with self._request("POST", url, repository, scopes=scopes) as r:
                if r.status_code == 201:
                    return None
                if r.status_code == 202:
                    return _location(r, repository, what) or ""
                if r.status_code in (401, 403, 404):
                    return ""  # not allowed to read the source, or no such blob: upload it
                raise await self._failure(r, repository, what)

        session = await self._retrying(attempt, repository, what)
        if session is None:
            return True
        if session:
            await self._cancel(repository, session)
        return False

    async def upload(
        self, repository: str, blob: StagedBlob, sent: Callable[[int], None] | None = None
    ) -> None:
        """Upload ``blob`` into ``repository`` and commit it under its digest.

        ``sent(n)`` is told about bytes sent beyond any sent before (a resent byte is not
        counted twice)."""
        budget = _Budget(self.client)
        mark = _Mark(sent)
        fd = await anyio.to_thread.run_sync(_open_blob, blob.path)
        try:
            while True:
                try:
                    location = await self._start(repository, blob)
                    if blob.size <= self.monolithic_max:
                        await self._put(repository, location, blob, fd, mark)
                    else:
                        location = await self._chunks(repository, location, blob, fd, mark)
                        await self._put(repository, location, blob, None, mark)
                except _Broken as broken:
                    await budget.spend(broken, mark.high)
                else:
                    return
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.close, fd)

    # -- the steps of an upload -------------------------------------------------------------

    async def _start(self, repository: str, blob: StagedBlob) -> str:
        what = f"upload of blob {blob.digest}"
        try:
            async with self._request("POST", f"/v2/{repository}/blobs/uploads/", repository) as r:
                location = _location(r, repository, what)
                if r.status_code == 202 and location:
                    return location
                if r.status_code == 202:
                    raise RegistryError(self.client.domain, repository, f"{what}: no Location")
                raise await self._failure(r, repository, what)
        except httpx.TransportError as exc:
            raise _Broken(self.client.transport_failure(exc, repository, what)) from None

    async def _chunks(
        self, repository: str, location: str, blob: StagedBlob, fd: int, mark: _Mark
    ) -> str:
        """``PATCH`` every chunk from the start; resume a broken one where the registry says
        it holds.  Returns the ``Location`` to commit."""
        budget = _Budget(self.client)
        offset = 0
        while offset < blob.size:
            end = min(blob.size, offset + self.chunk)
            try:
                location = await self._patch(repository, location, blob, fd, (offset, end), mark)
                offset = end
            except _Broken as broken:
                if broken.restart:
                    raise
                await budget.spend(broken, offset)
                location, offset = await self._status(repository, location, blob)
        return location

    async def _patch(
        self,
        repository: str,
        location: str,
        blob: StagedBlob,
        fd: int,
        span: tuple[int, int],
        mark: _Mark,
    ) -> str:
        """Send one chunk; the next ``Location``, once the registry holds all of it."""
        start, end = span
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start),
            "Content-Range": f"{start}-{end - 1}",
        }
        what = f"upload of blob {blob.digest}"
        try:
            async with self._request(
                "PATCH", location, repository, headers, body=lambda: _Range(fd, start, end, mark)
            ) as r:
                held = parse_upload_range(r.headers.get("range"))
                if r.status_code == 202 and held in (None, end):
                    return _location(r, repository, what) or location
                if r.status_code == 202:
                    message = f"the registry holds {held} bytes after a chunk ending at {end}"
                    raise _Broken(self._error(repository, blob, message))
                if r.status_code == 416:
                    raise _Broken(self._error(repository, blob, "the chunk's range was refused"))
                raise await self._failure(r, repository, what)
        except httpx.TransportError as exc:
            raise _Broken(self.client.transport_failure(exc, repository, what)) from None

    async def _status(self, repository: str, location: str, blob: StagedBlob) -> tuple[str, int]:
        """Where a session stands: its ``Location`` and the bytes it holds."""
        what = f"upload of blob {blob.digest}"
        try:
            async with self._request("GET", location, repository) as r:
                if r.status_code == 204:
                    held = parse_upload_range(r.headers.get("range")) or 0
                    return _location(r, repository, what) or location, min(held, blob.size)
                raise await self._failure(r, repository, what)
        except httpx.TransportError as exc:
            raise _Broken(self.client.transport_failure(exc, repository, what)) from None

    async def _put(
        self, repository: str, location: str, blob: StagedBlob, fd: int | None, mark: _Mark
    ) -> None:
        """Commit the session under the blob's digest, sending the whole body when ``fd``."""
        url = f"{location}{'&' if '?' in location else '?'}digest={blob.digest}"
        size = blob.size if fd is not None else 0
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        body = (lambda: _Range(fd, 0, blob.size, mark)) if fd is not None else None
        what = f"upload of blob {blob.digest}"
        try:
            async with self._request("PUT", url, repository, headers, body=body) as r:
                if r.status_code not in (201, 204):
                    raise await self._failure(r, repository, what)
                claimed = r.headers.get("docker-content-digest")
        except httpx.TransportError as exc:
            raise _Broken(self.client.transport_failure(exc, repository, what)) from None
        if claimed and claimed != blob.digest:
            raise self._error(repository, blob, f"registry stored it as {claimed}")

    async def _cancel(self, repository: str, location: str) -> None:
        """Best effort: end an upload session nobody will use (it would expire anyway)."""
        with anyio.CancelScope(shield=True):
            try:
                async with self._request("DELETE", location, repository):
                    pass
            except (httpx.HTTPError, RegistryError):
                pass

    # -- requests, errors, retries ------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        repository: str,
        headers: dict[str, str] | None = None,
        *,
        scopes: tuple[str, ...] | None = None,
        body: Callable[[], httpx.AsyncByteStream] | None = None,
    ) -> AbstractAsyncContextManager[httpx.Response]:
        return self.client.request(
            method,
            url,
            repository,
            scopes=scopes or (push_scope(repository),),
            headers=headers,
            body=body,
        )

    async def _failure(self, response: httpx.Response, repository: str, what: str) -> Exception:
        error, retryable, retry_after = await self.client.failure(response, repository, what)
        lost = response.status_code == 404 and "/blobs/uploads/" in response.request.url.path
        if error.code in _RESTART_CODES or lost:
            return _Broken(error, restart=True)
        if retryable:
            return _Broken(error, retry_after)
        return error

    def _error(self, repository: str, blob: StagedBlob, message: str) -> RegistryError:
        return RegistryError(
            self.client.domain, repository, f"upload of blob {blob.digest}: {message}"
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], repository: str, what: str) -> T:
        budget = _Budget(self.client)
        while True:
            try:
                return await attempt()
            except httpx.TransportError as exc:
                broken = _Broken(self.client.transport_failure(exc, repository, what))
            except _Broken as exc:
                broken = exc
            await budget.spend(broken, 0)


class _Mark:
    """Reports bytes sent beyond the most ever sent of one blob."""

    def __init__(self, sent: Callable[[int], None] | None) -> None:
        self._sent = sent
        self.high = 0

    def reached(self, position: int) -> None:
        if position > self.high:
            if self._sent is not None:
                self._sent(position - self.high)
            self.high = position


class _Range(httpx.AsyncByteStream):
    """A request body: the bytes ``[start, end)`` of a file, a chunk per worker-thread read."""

    def __init__(self, fd: int, start: int, end: int, mark: _Mark) -> None:
        self._fd = fd
        self._position = start
        self._end = end
        self._mark = mark

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        self._mark.reached(self._position)  # what was handed over before was sent
        if self._position >= self._end:
            raise StopAsyncIteration
        step = min(CHUNK_SIZE, self._end - self._position)
        data = await anyio.to_thread.run_sync(os.pread, self._fd, step, self._position)
        if not data:
            raise OSError(f"staged blob ended at byte {self._position} of {self._end}")
        self._position += len(data)
        return data


def _open_blob(path: str) -> int:
    """Blocking: the blob's file, opened as every store file is (a FIFO put in its place
    since it was hashed cannot block the open; the registry checks the digest of what is
    sent)."""
    try:
        return open_regular(path)[0]
    except OSError as exc:
        raise StoreError(path, f"cannot read: {exc.strerror or exc}") from None


def _location(response: httpx.Response, repository: str, what: str) -> str | None:
    """The upload session's ``Location``, resolved against the request it answers (a
    relative one is relative to the request's path, RFC 9110); ``None`` when there is none."""
    location = response.headers.get("location")
    if not location:
        return None
    try:
        return str(response.url.join(location))
    except httpx.InvalidURL:
        host = response.url.host
        raise RegistryError(
            host, repository, f"{what}: the registry gave an invalid Location {location[:200]!r}"
        ) from None
