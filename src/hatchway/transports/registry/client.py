"""An async client for one registry host: the OCI distribution API's read side, on httpx.

httpx runs on anyio, so this works under asyncio and trio alike.  Contracts:

* :meth:`RegistryClient.get_manifest` returns a manifest or index's bytes unverified together
  with the ``Docker-Content-Digest`` the registry claimed; the store verifies digests.
* :meth:`RegistryClient.get_blob` reads a small blob (a config) whole, unverified.
* :meth:`RegistryClient.open_blob` streams a blob in chunks, unverified (the engine or the
  pull verifies), resuming a cut-short body with ``Range: bytes=N-`` when the registry answers
  ``206``, and refetching from the start (skipping the bytes already delivered) when it does
  not.  A big blob is also fetched over idle connections, as byte ranges cut from it while
  it arrives (:mod:`.ranges`; ``SEGMENT_MIN``, ``SEGMENTS``): the first part streams straight
  to the consumer, the others into an unlinked temp file that the consumer reads when it gets
  there; a registry that ignores ``Range`` (answers ``200``) is
  not asked for ranges again.  Redirects (to a CDN or object store) are followed; httpx
  drops ``Authorization`` when a redirect leaves the registry's origin.
* Every request is authorised by :class:`~hatchway.transports.registry.auth.Authenticator`, holds
  one of the registry's ``max_connections_per_registry`` slots while it runs, and is retried
  per :class:`~hatchway.transports.registry.options.RetryPolicy` — but only when trying again
  can succeed (timeouts, resets, cut bodies, 429, 502-504).  A certificate that fails
  verification, a client certificate the registry demands or rejects, a refused connection or
  a name that does not resolve fails at once, with the fix (:mod:`.trust`).  Failures raise
  :class:`~hatchway.errors.RegistryError` naming registry, repository and status.
* Transport (:class:`~hatchway.transports.registry.options.Security`): HTTPS first; a loopback
  or insecure host that turns out not to speak TLS is switched to plain HTTP on its first
  request, once, for the client's lifetime.  Trust (system CAs, ``--ca-cert``, certs.d, client
  certificates) is loaded in a worker thread before the first request (:meth:`prepare`).
* :meth:`RegistryClient.request` is the same authorised, slotted request for any method, body
  and token scopes, without retries or status checks: the write side (``upload``,
  ``destination``) builds its own protocol on it and turns answers into errors with
  :meth:`RegistryClient.failure`.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio

# httpx imports httpcore (and with it trio, h11) only when the first client is made.  This
# module is imported on a worker thread (hatchway.session): import them here too, so that
# making a client on the event loop does not stall it for ~0.1 s.
import httpcore  # noqa: F401
import httpx
from anyio import Event, Lock  # anyio imports them on first use: here, on a worker thread

from hatchway.errors import OutputError, RegistryError
from hatchway.files import pwrite_all
from hatchway.limits import (
    MAX_DOCUMENT_SIZE,
    SEGMENT_MIN,
    SEGMENTED_MAX,
    STREAM_CHUNK,
)
from hatchway.model import Descriptor
from hatchway.transports.registry.auth import Authenticator
from hatchway.transports.registry.credentials import CredentialLookup, Credentials
from hatchway.transports.registry.options import RegistryOptions, api_host
from hatchway.transports.registry.protocol import (
    MANIFEST_ACCEPT,
    RETRY_STATUSES,
    parse_content_range,
    parse_error_body,
    parse_retry_after,
)
from hatchway.transports.registry.ranges import Part, Slots, Spool
from hatchway.transports.registry.trust import (
    Diagnosis,
    Failure,
    HostTrust,
    certs_roots,
    check_client_certificate,
    configure,
    diagnose,
    explain,
    host_trust,
)

T = TypeVar("T")
_MAX_ERROR_BODY = 64 << 10
#: A request body, made afresh for each attempt (an authorisation retry sends it again): bytes,
#: or a stream (the caller sets ``Content-Length``).  A stream is an ``httpx.AsyncByteStream``
#: whose iterator is an object, not an async generator: a generator abandoned mid-body when a
#: connection breaks would be finalised by the garbage collector, which trio refuses.
Body = Callable[[], bytes | httpx.AsyncByteStream]


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    """A manifest or index as the registry sent it (unverified)."""

    raw: bytes
    content_type: str
    claimed_digest: str | None


class _Retry(Exception):
    """One attempt failed in a way worth retrying (internal)."""

    def __init__(self, error: RegistryError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class RegistryClient:
    """Requests to one registry host (``domain`` as in a reference: ``host[:port]``)."""

    def __init__(self, domain: str, options: RegistryOptions) -> None:
        self.domain = domain
        self.options = options
        self.api_host = api_host(domain)
        self.security = options.security(domain)
        # Loaded with the host's trust by prepare() (file reads belong in a thread, not here).
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._trust: HostTrust | None = None
        self._trust_lock = Lock()
        self._scheme_decided = not self.security.may_fall_back
        self._deciding: Event | None = None  # set when the request deciding it is done
        self._answered = False  # any HTTP answer from this host yet
        self._ranges_work: bool | None = None  # blob ranges: answered with 206, or not
        #: gzip blobs' uncompressed sizes (mod 2**32) as their trailers say, by digest
        #: (:meth:`peek_size`): hints for writing an archive in place, never trusted.
        self.size_hints: dict[str, int] = {}
        self._peeking: set[str] = set()
        self._client_checked = False
        limit = options.max_connections_per_registry
        t = options.timeouts
        transport = options.transport
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError("RegistryOptions.transport must be an httpx.AsyncBaseTransport")
        self._http = httpx.AsyncClient(
            base_url=f"https://{self.api_host}",
            headers={"User-Agent": options.user_agent},
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=None),
            # One more than the slots: the request that decides a host's scheme uses two.
            limits=httpx.Limits(max_connections=limit + 1, max_keepalive_connections=limit),
            follow_redirects=True,
            verify=self._ssl,
            transport=transport,
            trust_env=False,
        )
        self._slots = Slots(limit)
        explicit = Credentials.parse(options.creds) if options.creds else None
        self._creds_cache: dict[str, Credentials | None] = {}
        self._creds_lock = Lock()
        self._lookup = CredentialLookup()
        self._explicit = explicit
        self.auth = Authenticator(domain, options, self._credentials, self._http)

    # -- public API ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``https://HOST`` — or ``http://HOST`` once a loopback or insecure host turned out
        not to speak TLS."""
        return str(self._http.base_url).rstrip("/")

    async def prepare(self) -> HostTrust:
        """Load this host's trust into the client's SSL context, once (in a worker thread).

        Every request path calls it first; a request sent another way must too.  Raises
        :class:`RegistryError` for a CA or client certificate that cannot be loaded.
        """
        if self._trust is not None:
            return self._trust
        async with self._trust_lock:
            if self._trust is None:
                self._trust = await anyio.to_thread.run_sync(self._load_trust)
            return self._trust

    async def get_manifest(self, repository: str, reference: str) -> FetchedDocument:
        """``GET /v2/<repository>/manifests/<tag-or-digest>`` with every supported type."""
        path = f"/v2/{repository}/manifests/{reference}"
        what = f"manifest {reference}"

        async def attempt() -> FetchedDocument:
            async with self._open(path, repository, what, {"Accept": MANIFEST_ACCEPT}) as resp:
                raw = await self._read_limited(resp, repository, what)
                return FetchedDocument(
                    raw,
                    resp.headers.get("content-type", ""),
                    resp.headers.get("docker-content-digest"),
                )

        return await self._retrying(attempt, repository, what)

    async def get_blob(self, repository: str, descriptor: Descriptor) -> bytes:
        """A small blob (a config) read whole; refuses blobs over 16 MiB."""
        path = f"/v2/{repository}/blobs/{descriptor.digest}"
        what = f"blob {descriptor.digest}"
        if descriptor.size > MAX_DOCUMENT_SIZE:
            raise RegistryError(self.domain, repository, f"{what} is too large to be a config")

        async def attempt() -> bytes:
            async with self._open(path, repository, what, {"Accept-Encoding": "identity"}) as r:
                return await self._read_limited(r, repository, what)

        return await self._retrying(attempt, repository, what)

    async def peek_size(self, repository: str, descriptor: Descriptor) -> None:
        """On an idle connection only, read a gzip blob's last 4 bytes — its uncompressed
        size modulo 2**32 (RFC 1952) — into :attr:`size_hints`.  Best effort: any failure
        or a registry that ignores ``Range`` leaves no hint; never raises but cancellation.
        A blob another call is peeking at already is left to it."""
        digest = descriptor.digest

        def wanted() -> bool:
            return digest not in self.size_hints and self._ranges_work is not False

        if descriptor.size < 18 or digest in self._peeking:
            return
        self._peeking.add(digest)
        try:
            if await self._slots.spare(wanted):
                await self._peek(repository, descriptor)
        finally:
            self._peeking.discard(digest)

    async def _peek(self, repository: str, descriptor: Descriptor) -> None:
        """:meth:`peek_size`'s request, on the slot the caller took (and that this gives back)."""
        digest = descriptor.digest
        end = descriptor.size
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={end - 4}-{end - 1}"}
        path = f"/v2/{repository}/blobs/{digest}"
        try:
            with contextlib.suppress(httpx.HTTPError, ssl.SSLError, RegistryError, _Retry):
                async with self._open(path, repository, f"blob {digest}", headers, True) as r:
                    self._ranges_work = r.status_code == 206
                    tail = b""
                    if r.status_code == 206:  # a 200 is the whole blob: hang up at once
                        async for chunk in _raw(r):
                            tail += chunk
                            if len(tail) > 4:
                                break
                    if len(tail) == 4:
                        self.size_hints[digest] = int.from_bytes(tail, "little")
        finally:
            self._slots.release()

    @asynccontextmanager
    async def open_blob(
        self, repository: str, descriptor: Descriptor
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob's bytes (see the module docstring for resume and verification)."""
        # A blob takes at most half the connections (and ranges_per_blob), and only idle ones.
        most = min(self.options.ranges_per_blob, self.options.max_connections_per_registry // 2)
        if (
            most > 1
            and self._ranges_work is not False
            and 2 * SEGMENT_MIN <= descriptor.size <= SEGMENTED_MAX
        ):
            async with self._split(repository, descriptor, most - 1) as chunks:
                yield chunks
            return
        chunks = self._blob_chunks(repository, descriptor)
        try:
            yield chunks
        finally:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()

    @asynccontextmanager
    async def _split(
        self, repository: str, descriptor: Descriptor, helpers: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob in one request that ``helpers`` cut short while connections are idle
        (:mod:`.ranges`); chunks in order."""
        spool = Spool(descriptor.size)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(helpers):
                    tg.start_soon(self._help, repository, descriptor, spool)
                chunks = self._in_order(repository, descriptor, spool)
                try:
                    yield chunks
                finally:
                    with anyio.CancelScope(shield=True):
                        await chunks.aclose()
                tg.cancel_scope.cancel()  # done, or the consumer stopped early
        finally:
            if spool.fd is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(os.close, spool.fd)

    async def _help(self, repository: str, descriptor: Descriptor, spool: Spool) -> None:
        """While the blob has a big part left, take an idle connection and fetch that part's
        back half."""
        min_half = SEGMENT_MIN // 2

        def wanted() -> bool:
            return self._ranges_work is not False and spool.splittable(min_half)

        # Not before the first part flows: by then every blob opened at the same time has
        # asked for its first connection, and a helper takes only a slot none of them wants.
        await spool.flowing.wait()
        while await self._slots.spare(wanted):
            try:
                part = spool.split(min_half)
                if part is not None:
                    await self._fill(repository, descriptor, spool, part)
            finally:
                self._slots.release()

    async def _fill(
        self, repository: str, descriptor: Descriptor, spool: Spool, part: Part
    ) -> None:
        """Fetch ``part`` into the spool (on the slot the caller holds), stopping where the
        part ends — earlier than asked if it was split meanwhile."""
        async with spool.file_lock:
            if spool.fd is None:
                try:
                    spool.fd = await anyio.to_thread.run_sync(_unlinked_temp)
                except OSError as exc:
                    raise _spool_error(exc) from None
        fd = spool.fd
        # aclosing: a generator left suspended would hold its connection until collected.
        chunks = self._blob_chunks(repository, descriptor, part.start, part.end, held=True)
        async with aclosing(chunks):
            async for chunk in chunks:
                piece = chunk[: part.unclaimed]
                offset = part.start + part.claimed
                part.claimed += len(piece)
                try:
                    await anyio.to_thread.run_sync(pwrite_all, fd, piece, offset)
                except OSError as exc:
                    raise _spool_error(exc) from None
                part.filled += len(piece)
                spool.changed()
                if not part.unclaimed:
                    break

    async def _in_order(
        self, repository: str, descriptor: Descriptor, spool: Spool
    ) -> AsyncGenerator[bytes, None]:
        first = spool.first
        if first.unclaimed:
            # Asked as a range (to the end): the first answer tells whether ranges work here.
            chunks = self._blob_chunks(repository, descriptor, 0, descriptor.size, held=True)
            async with self._slots.hold(), aclosing(chunks):
                spool.flowing.set()
                async for chunk in chunks:
                    piece = chunk[: first.unclaimed]
                    first.claimed += len(piece)
                    yield piece
                    if not first.unclaimed:
                        break
        offset = first.end
        while offset < descriptor.size:
            part = spool.after(offset)
            done = 0
            while done < part.end - part.start:
                while part.filled == done:
                    await spool.wait()
                size = min(part.filled - done, STREAM_CHUNK)
                assert spool.fd is not None  # a part has bytes only once the file exists
                chunk = await anyio.to_thread.run_sync(os.pread, spool.fd, size, part.start + done)
                if not chunk:  # only if the spool was cut behind our back: never loop on it
                    raise RegistryError(
                        self.domain, repository, f"blob {descriptor.digest}: spool file shrank"
                    )
                done += len(chunk)
                yield chunk
            offset = part.end

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        scopes: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """One authorised request holding a connection slot; the response (any status) is
        streamed and closed when the context exits.  ``url`` is a path or an absolute URL (an
        upload ``Location``); credentials go only to the registry's own origin.  ``scopes``
        are the token scopes it needs (default: pull on ``repository``).  Transport errors
        propagate as httpx's; nothing is retried except once on a 401 that new authorisation
        may satisfy (so ``body`` must make a fresh body each call)."""
        async with self._slots.hold():
            response = await self._send_authorised(
                url, repository, dict(headers or {}), method=method, body=body, scopes=scopes
            )
            try:
                yield response
                await _drain(response)
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    async def failure(
        self, response: httpx.Response, repository: str, what: str
    ) -> tuple[RegistryError, bool, float | None]:
        """The error a response means, whether retrying may help (429, 502-504) and the
        seconds a 429's ``Retry-After`` asks for."""
        error = await self._status_error(response, repository, what)
        if isinstance(error, _Retry):
            return error.error, True, error.retry_after
        assert isinstance(error, RegistryError)
        return error, False, None

    def transport_failure(
        self, exc: httpx.TransportError, repository: str, what: str
    ) -> RegistryError:
        """The error a request that got no answer ends with, once retries ran out."""
        return self._transport_error(exc, repository, what, None)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- blob streaming with resume -------------------------------------------------------

    async def _blob_chunks(
        self,
        repository: str,
        descriptor: Descriptor,
        start: int = 0,
        end: int | None = None,
        *,
        held: bool = False,
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``start`` to ``end`` (default: the blob's end) of the blob, resumed after
        faults; a ``200`` to a ranged request is read whole, keeping only what is wanted, and
        turns ranges off for this client.  ``held``: the caller holds a connection slot."""
        path = f"/v2/{repository}/blobs/{descriptor.digest}"
        what = f"blob {descriptor.digest}"
        policy = self.options.retry
        wanted = (descriptor.size if end is None else end) - start
        ranged_end = "" if end is None else str(end - 1)
        received = 0
        failures = 0
        at_last_failure = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if start + received or end is not None:
                headers["Range"] = f"bytes={start + received}-{ranged_end}"
            try:
                async with (
                    self._open(path, repository, what, headers, held) as resp,
                    aclosing(_raw(resp, STREAM_CHUNK)) as body,
                ):
                    if "Range" in headers:
                        self._ranges_work = resp.status_code == 206
                    skip = self._resume_offset(resp, start + received, repository, what)
                    # What a ranged body may carry: the whole blob (a 200), or the rest of
                    # the range.  A longer one is refused, not drained without end.
                    allowed = descriptor.size if resp.status_code == 200 else wanted - received
                    carried = 0
                    async for chunk in body:
                        carried += len(chunk)
                        if end is not None and carried > allowed:
                            raise RegistryError(
                                self.domain,
                                repository,
                                f"{what}: the registry sent more than the {allowed} bytes "
                                "asked for",
                            )
                        if skip:
                            dropped = min(skip, len(chunk))
                            skip -= dropped
                            chunk = chunk[dropped:]
                            if not chunk:
                                continue
                        if end is not None:
                            chunk = chunk[: wanted - received]  # a 200 goes on past the range
                        received += len(chunk)
                        if chunk:
                            yield chunk
                        if end is not None and received >= wanted:
                            break  # the rest of a 200 is not wanted: hang up (see _raw)
                if received >= wanted:
                    return
                raise _Retry(  # noqa: TRY301 - a clean but short body is retried like a cut one
                    RegistryError(
                        self.domain,
                        repository,
                        f"{what} ended after {start + received} of {descriptor.size} bytes",
                    )
                )
            except _Retry as retry:
                if received > at_last_failure:
                    failures = 0
                at_last_failure = received
                if failures >= policy.retries:
                    raise retry.error from None
                await policy.sleep(policy.delay(failures, retry.retry_after))
                failures += 1
            except (httpx.TransportError, ssl.SSLError) as exc:
                await self._raise_if_permanent(exc, repository, what)
                if received > at_last_failure:
                    failures = 0
                at_last_failure = received
                if failures >= policy.retries:
                    raise self._transport_error(exc, repository, what, received) from None
                await policy.sleep(policy.delay(failures))
                failures += 1

    def _resume_offset(
        self, resp: httpx.Response, received: int, repository: str, what: str
    ) -> int:
        """Bytes of this response to drop: 0 after a proper 206, ``received`` after a 200."""
        if not received or resp.status_code == 200:
            return received
        span = parse_content_range(resp.headers.get("content-range"))
        if span is None or span[0] != received:
            raise RegistryError(
                self.domain,
                repository,
                f"{what}: asked to resume at byte {received}, "
                f"got Content-Range {resp.headers.get('content-range')!r}",
                status=resp.status_code,
            )
        return 0

    # -- one request, with auth, slots and error translation ------------------------------

    @asynccontextmanager
    async def _open(
        self, path: str, repository: str, what: str, headers: dict[str, str], held: bool = False
    ) -> AsyncIterator[httpx.Response]:
        """One authorised GET whose response is 200 or 206; raises otherwise.  It takes a
        connection slot for its time, unless the caller ``held`` one already.

        Retryable failures raise :class:`_Retry`; transport errors propagate as httpx's.
        """
        async with contextlib.nullcontext() if held else self._slots.hold():
            response = await self._send_authorised(path, repository, headers)
            try:
                if response.status_code not in (200, 206):
                    raise await self._status_error(response, repository, what)
                yield response
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    async def _send_authorised(
        self,
        path: str,
        repository: str,
        headers: dict[str, str],
        *,
        method: str = "GET",
        body: Body | None = None,
        scopes: Sequence[str] | None = None,
    ) -> httpx.Response:
        await self._prepare_credentials(repository)
        for attempt in range(2):
            authorization = await self.auth.authorization(repository, scopes)
            content = body() if body is not None else None
            if isinstance(content, httpx.AsyncByteStream):
                # URL and default headers merged as for any request, the body ours as it is.
                built = self._http.build_request(method, path, headers=headers)
                request = httpx.Request(
                    method, built.url, headers=built.headers, stream=content,
                    extensions=built.extensions,
                )  # fmt: skip
            else:
                request = self._http.build_request(method, path, headers=headers, content=content)
            if authorization is not None and self._own_origin(request.url):
                request.headers["Authorization"] = authorization
            try:
                response = await self._send(request)
            except httpx.TooManyRedirects:  # not a TransportError: no retry would end it
                raise RegistryError(
                    self.domain,
                    repository,
                    f"GET {path}: too many redirects (the registry redirects in a loop)",
                ) from None
            if response.status_code != 401 or attempt == 1:
                return response
            if not self.auth.rejected(response, authorization, repository):
                return response
            await response.aclose()
        raise AssertionError("unreachable")

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (streaming).  The first answer from a loopback or insecure host
        decides its scheme: if the server does not speak TLS, the client switches to plain
        HTTP for good and sends the request again that way; any answer over TLS keeps HTTPS
        (a host that spoke TLS once is never downgraded).
        """
        while (
            not self._scheme_decided
            and request.url.scheme == "https"
            and request.url.netloc == self._http.base_url.netloc
            and request.method == "GET"
            and "authorization" not in request.headers
        ):
            # One request at a time finds out (with two connections); the others wait for
            # its answer instead of taking two connections each from a pool that may not
            # have them (each one's plain answer would hold a connection its TLS attempt
            # waits for).
            if self._deciding is None:
                self._deciding = deciding = Event()
                try:
                    return await self._send_racing_plain(request)
                finally:
                    self._deciding = None
                    deciding.set()
            await self._deciding.wait()
        if (
            request.url.scheme == "https"
            and self._http.base_url.scheme == "http"
            and request.url.netloc == self._http.base_url.netloc
        ):
            request.url = request.url.copy_with(scheme="http")  # built before the decision
        await self.prepare()
        try:
            response = await self._http.send(request, stream=True)
        except (httpx.TransportError, ssl.SSLError) as exc:
            if (
                not self.security.may_fall_back
                or request.url.scheme != "https"
                or request.url.netloc != self._http.base_url.netloc
                or self._heard_tls
                or diagnose(exc).failure is not Failure.NOT_TLS
            ):
                raise
            self._use_plain_http()
            request.url = request.url.copy_with(scheme="http")
            return await self._http.send(request, stream=True)
        if request.url.netloc == self._http.base_url.netloc:
            self._scheme_decided = True
            self._answered = True
        return response

    @property
    def _heard_tls(self) -> bool:
        """This host answered over TLS once: it is never downgraded."""
        return self._scheme_decided and self._http.base_url.scheme == "https"

    def _use_plain_http(self) -> None:
        """This host does not speak TLS: plain HTTP for the client's lifetime."""
        self._scheme_decided = True
        self._http.base_url = f"http://{self.api_host}"

    async def _send_racing_plain(self, request: httpx.Request) -> httpx.Response:
        """The first request to a loopback or insecure host, whose scheme is not decided yet.

        Finding out that a host does not speak TLS takes a round trip, and then the request
        takes its own over plain HTTP.  So the same request (a GET without credentials, which
        tells a listener on the plain port nothing the user has not allowed to cross it
        unencrypted) is sent over plain HTTP at once too.  TLS still decides: an answer over
        TLS is used and the plain attempt dropped; only when the host turns out not to speak
        TLS is the plain answer (or its error) used, and HTTP kept for the client's lifetime.
        """
        plain = httpx.Request(
            request.method,
            request.url.copy_with(scheme="http"),
            headers=request.headers,
            extensions=request.extensions,
        )
        tls: httpx.Response | BaseException | None = None
        fallback: httpx.Response | BaseException | None = None
        fallback_done = Event()

        async def send_plain() -> None:
            nonlocal fallback
            try:
                fallback = await self._http.send(plain, stream=True)
            except Exception as exc:
                fallback = exc
            finally:
                fallback_done.set()

        use_plain = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_plain)
                try:
                    await self.prepare()  # the host's trust, while the plain request goes
                    tls = await self._http.send(request, stream=True)
                except (httpx.TransportError, ssl.SSLError, RegistryError) as exc:
                    tls = exc
                use_plain = (
                    isinstance(tls, BaseException)
                    and diagnose(tls).failure is Failure.NOT_TLS
                    and not self._heard_tls  # another request may have, meanwhile
                )
                if use_plain:
                    await fallback_done.wait()
                else:
                    tg.cancel_scope.cancel()
        except BaseException:  # cancelled from outside: close whatever was answered
            with anyio.CancelScope(shield=True):
                for answer in (tls, fallback):
                    if isinstance(answer, httpx.Response):
                        await answer.aclose()
            raise
        if isinstance(fallback, httpx.Response) and not use_plain:
            await fallback.aclose()
        if isinstance(tls, httpx.Response):
            self._scheme_decided = True
            self._answered = True
            return tls
        if not use_plain:
            assert isinstance(tls, BaseException)
            raise tls
        self._use_plain_http()
        if isinstance(fallback, BaseException):
            raise fallback
        assert fallback is not None
        request.url = plain.url
        self._answered = True
        return fallback

    async def _status_error(
        self, response: httpx.Response, repository: str, what: str
    ) -> Exception:
        body = b""
        try:
            async for chunk in _raw(response):
                body += chunk
                if len(body) > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        parsed = parse_error_body(body)
        status = response.status_code
        message = parsed.message or response.reason_phrase or "error"
        if status in (401, 403):
            problem = self._lookup.problem(self.domain)
            who = (
                "with the given credentials"
                if self.auth.has_credentials(repository)
                else f"anonymously ({problem or 'no credentials for this registry'})"
            )
            message = f"{what}: access denied {who}: {message}"
        else:
            message = f"{what}: {message}"
        error = RegistryError(self.domain, repository, message, status=status, code=parsed.code)
        if status in RETRY_STATUSES:
            retry_after = None
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            return _Retry(error, retry_after)
        return error

    async def _read_limited(self, response: httpx.Response, repository: str, what: str) -> bytes:
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_DOCUMENT_SIZE:
            raise RegistryError(self.domain, repository, f"{what} is too large ({length} bytes)")
        body = bytearray()
        async for chunk in _raw(response):
            body += chunk
            if len(body) > MAX_DOCUMENT_SIZE:
                raise RegistryError(self.domain, repository, f"{what} is too large")
        return bytes(body)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], repository: str, what: str) -> T:
        policy = self.options.retry
        for n in range(policy.retries + 1):
            try:
                return await attempt()
            except _Retry as retry:
                if n >= policy.retries:
                    raise retry.error from None
                await policy.sleep(policy.delay(n, retry.retry_after))
            except (httpx.TransportError, ssl.SSLError) as exc:
                await self._raise_if_permanent(exc, repository, what)
                if n >= policy.retries:
                    raise self._transport_error(exc, repository, what, None) from None
                await policy.sleep(policy.delay(n))
        raise AssertionError("unreachable")

    async def _raise_if_permanent(self, exc: Exception, repository: str, what: str) -> None:
        """Raise at once, with the fix, when retrying cannot help (see :mod:`.trust`)."""
        if isinstance(exc, httpx.UnsupportedProtocol) or (
            isinstance(exc, httpx.RemoteProtocolError) and "location header" in str(exc)
        ):  # a redirect nowhere (file://, no URL): the same answer on every retry
            raise RegistryError(self.domain, repository, f"{what}: bad redirect ({exc})") from None
        diagnosis = diagnose(exc)
        if not diagnosis.permanent:
            found = await self._check_client_certificate(exc)
            if found is None:
                return
            diagnosis = found
        trust = self._trust or HostTrust(self.domain, self.security.verify)
        message = explain(diagnosis, trust, self.api_host)
        raise RegistryError(self.domain, repository, f"{what}: {message}") from None

    async def _check_client_certificate(self, exc: Exception) -> Diagnosis | None:
        """A TLS connection to a host that never answered was cut: once per client, check
        whether the server refuses our client certificate (its alert can be lost in the
        reset; :func:`.trust.check_client_certificate`)."""
        if (
            self._answered
            or self._client_checked
            or self.options.transport is not None
            or self._http.base_url.scheme != "https"
            or not isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError | httpx.WriteError)
        ):
            return None
        self._client_checked = True
        url = self._http.base_url
        return await check_client_certificate(url.host, url.port or 443, self._ssl)

    def _load_trust(self) -> HostTrust:
        options = self.options
        trust = host_trust(
            self.domain,
            verify=self.security.verify,
            ca_cert=options.ca_cert,
            client_cert=options.client_cert,
            client_key=options.client_key,
            roots=certs_roots(options.certs_dirs),
        )
        configure(self._ssl, trust)
        return trust

    def _transport_error(
        self, exc: Exception, repository: str, what: str, received: int | None
    ) -> RegistryError:
        kind = type(exc).__name__
        detail = str(exc) or kind
        after = f" after {received} bytes" if received else ""
        tries = self.options.retry.retries + 1
        return RegistryError(
            self.domain,
            repository,
            f"{what}: {_describe(exc)}{after} ({detail}; gave up after {tries} attempts)",
        )

    async def _prepare_credentials(self, repository: str) -> None:
        """Look the repository's credentials up once, in a worker thread (a credential helper
        is a program, and may take a while)."""
        if self._explicit is not None or not self.options.use_credential_files:
            return
        if repository in self._creds_cache:
            return
        async with self._creds_lock:
            if repository not in self._creds_cache:
                found = await anyio.to_thread.run_sync(self._lookup.find, self.domain, repository)
                self._creds_cache[repository] = found

    def _credentials(self, repository: str) -> Credentials | None:
        if self._explicit is not None:
            return self._explicit
        if not self.options.use_credential_files:
            return None
        if repository not in self._creds_cache:
            self._creds_cache[repository] = self._lookup.find(self.domain, repository)
        return self._creds_cache[repository]

    def _own_origin(self, url: httpx.URL) -> bool:
        base = self._http.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


async def _raw(
    response: httpx.Response, chunk_size: int | None = None
) -> AsyncGenerator[bytes, None]:
    """The body's bytes as sent (no Content-Encoding decoding), as they arrive.

    A response built in memory (``httpx.MockTransport``) is already read: yield its bytes.
    """
    if response.is_stream_consumed:
        yield response.content
        return
    chunks = response.aiter_raw(chunk_size)
    finished = False
    try:
        async for chunk in chunks:
            yield chunk
        finished = True
    finally:
        if not finished:
            # Left early (a range cut short, a consumer that hung up, an error).  httpx reads
            # a body through a chain of async generators, and closing the outer one leaves the
            # inner ones to the garbage collector (trio warns about each).  Closing the
            # connection first makes the next read fail, and that error ends every one of them.
            with anyio.CancelScope(shield=True):
                await response.aclose()
                with contextlib.suppress(Exception):
                    async for _ in chunks:
                        pass


async def _drain(response: httpx.Response) -> None:
    """Read what is left of a small body, so that the connection can carry the next request
    (one closed with its body unread cannot be reused); a large rest is left to ``aclose``."""
    if response.is_stream_consumed or response.is_closed:
        return
    read = 0
    try:
        async with aclosing(_raw(response)) as chunks:  # left early: closed, not abandoned
            async for chunk in chunks:
                read += len(chunk)
                if read > _MAX_ERROR_BODY:
                    return
    except httpx.HTTPError:
        return


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection lost"
    return "transport error"


def _spool_error(exc: OSError) -> OutputError:
    return OutputError(
        f"cannot spool a blob's byte ranges in {tempfile.gettempdir()}: "
        f"{exc.strerror or exc} (point TMPDIR elsewhere)"
    )


def _unlinked_temp() -> int:
    """Blocking: the descriptor of a temp file that has no name (nothing is left to remove,
    whatever happens to this process)."""
    with tempfile.TemporaryFile(buffering=0) as handle:
        return os.dup(handle.fileno())
