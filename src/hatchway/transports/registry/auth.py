"""Registry authentication: anonymous, Basic, and the Bearer token flow.

One :class:`Authenticator` per registry host.  It learns what the registry wants from the
first ``401`` (its ``WWW-Authenticate`` challenge) and from then on authorises requests up
front:

* **Basic**: every request carries ``Authorization: Basic ...`` when credentials exist.
* **Bearer** (Docker distribution token auth, as Docker Hub, GHCR and Quay use): a token is
  requested from the challenge's ``realm`` for ``service`` and the request's scopes — by default
  ``repository:NAME:pull``; a push asks for ``repository:NAME:pull,push`` and, to mount a blob
  from another repository, ``repository:FROM:pull`` too — with Basic credentials when there are
  any, else anonymously; cached per set of scopes until shortly before it expires, fetched once
  however many requests need it, and refreshed when the registry rejects it with another 401.
  (https://distribution.github.io/distribution/spec/auth/token/)
* **Identity tokens** (credentials whose user is ``<token>``, as ``docker login`` stores them
  for some registries): a refresh token, exchanged at the realm for an access token with the
  OAuth2 ``refresh_token`` grant (https://distribution.github.io/distribution/spec/auth/oauth/).
  A registry that asks for Basic auth cannot use one; that is refused with a clear error.

Credentials are sent only over HTTPS or to hosts the user marked insecure or loopback; tokens
and passwords never appear in errors.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx

from hatchway.errors import RegistryError
from hatchway.limits import MAX_TOKEN_RESPONSE
from hatchway.transports.registry.credentials import Credentials
from hatchway.transports.registry.options import RegistryOptions, is_loopback
from hatchway.transports.registry.protocol import Challenge, parse_challenges, pull_scope
from hatchway.transports.registry.trust import diagnose

#: A token is renewed this many seconds before it expires.
EXPIRY_MARGIN = 10.0
#: The distribution spec's default lifetime when a token response names none.
DEFAULT_TOKEN_LIFETIME = 60.0
#: The longest a token is kept, whatever its ``expires_in`` says.
MAX_TOKEN_LIFETIME = 86_400.0
#: What a token may hold: it goes into an ``Authorization`` header as it is.
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Per-registry auth state.  ``credentials(repository)`` looks credentials up lazily."""

    def __init__(
        self,
        registry: str,
        options: RegistryOptions,
        credentials: Callable[[str], Credentials | None],
        http: httpx.AsyncClient,
    ) -> None:
        self.registry = registry
        self._options = options
        self._credentials = credentials
        self._http = http
        self._challenge: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def authorization(
        self, repository: str | None, scopes: Sequence[str] | None = None
    ) -> str | None:
        """The ``Authorization`` value for a request to ``repository`` (``None``: anonymous).

        ``scopes`` are the token scopes the request needs (default: pull on ``repository``).
        """
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials(repository or "")
            if creds is not None and creds.identity_token:
                raise RegistryError(
                    self.registry,
                    repository,
                    "the stored credentials are an identity token, which only a token server "
                    "accepts, but this registry asks for Basic auth; log in with a password",
                )
            return creds.basic_header() if creds is not None else None
        if scopes is None:
            scopes = (pull_scope(repository),) if repository else ()
        token = await self._token(tuple(scopes), challenge, repository)
        return f"Bearer {token.value}"

    def rejected(self, response: httpx.Response, sent: str | None, repository: str | None) -> bool:
        """Learn from a 401; ``True`` when retrying with new authorization may succeed."""
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            return False
        challenge = next((c for c in usable if c.scheme == "bearer"), usable[0])
        self._challenge = challenge
        if sent is None:
            return challenge.scheme == "bearer" or self.has_credentials(repository)
        if challenge.scheme == "bearer" and sent.startswith("Bearer "):
            # Expired or too narrow: forget it, so the retry asks for a fresh one.
            value = sent.removeprefix("Bearer ")
            for scope, token in list(self._tokens.items()):
                if token.value == value:
                    del self._tokens[scope]
            return True
        return False

    def has_credentials(self, repository: str | None) -> bool:
        return self._credentials(repository or "") is not None

    async def _token(
        self, scopes: tuple[str, ...], challenge: Challenge, repository: str | None
    ) -> _Token:
        key = " ".join(scopes)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_at > anyio.current_time():
                return token
            token = await self._fetch_token(scopes, challenge, repository)
            self._tokens[key] = token
            return token

    async def _fetch_token(
        self, scopes: tuple[str, ...], challenge: Challenge, repository: str | None
    ) -> _Token:
        realm = challenge.realm
        if not realm:
            raise RegistryError(self.registry, repository, "bearer challenge without a realm")
        service = challenge.params.get("service")
        creds = self._credentials(repository or "")
        if creds is not None:
            self._check_realm_transport(realm, repository)
        started = anyio.current_time()
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.password}
                form |= {"client_id": "hatchway", "scope": " ".join(scopes)}
                if service:
                    form["service"] = service
                request = self._http.build_request("POST", realm, data=form)
            else:
                params = [("service", service)] if service else []
                params += [("scope", scope) for scope in scopes]
                headers = {"Authorization": creds.basic_header()} if creds is not None else {}
                # The realm's own query parameters stay (httpx's params= would replace them).
                url = httpx.URL(realm).copy_merge_params(tuple(params))
                request = self._http.build_request("GET", url, headers=headers)
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    verdict = "rejected the credentials" if creds else "refused an anonymous token"
                    raise RegistryError(
                        self.registry,
                        repository,
                        f"token server {_host(realm)} {verdict}",
                        status=response.status_code,
                    )
                body = await self._read_capped(response, realm, repository)
            finally:
                await response.aclose()
        except (httpx.HTTPError, ssl.SSLError) as exc:
            reason = diagnose(exc).reason or repr(exc)
            raise RegistryError(
                self.registry, repository, f"token server {_host(realm)} unreachable ({reason})"
            ) from None
        except httpx.InvalidURL:  # the realm is not a URL (not an HTTPError: caught apart)
            raise RegistryError(
                self.registry, repository, f"the token realm {_host(realm)} is not a valid URL"
            ) from None
        return self._parse_token(body, started, repository)

    async def _read_capped(
        self, response: httpx.Response, realm: str, repository: str | None
    ) -> bytes:
        """The reply's body, refused as soon as it grows past ``MAX_TOKEN_RESPONSE`` (read as
        it arrives, so an endless reply costs at most that much memory)."""
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_TOKEN_RESPONSE:
                raise RegistryError(
                    self.registry,
                    repository,
                    f"token server {_host(realm)} sent more than {MAX_TOKEN_RESPONSE} bytes",
                )
        return bytes(body)

    def _parse_token(self, body: bytes, started: float, repository: str | None) -> _Token:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        value = None
        if isinstance(doc, dict):
            value = doc.get("token") or doc.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(self.registry, repository, "token server sent no token")
        if not _TOKEN.fullmatch(value):  # it goes into a header: never echoed, never retried
            raise RegistryError(
                self.registry, repository, "token server sent an invalid token (not header-safe)"
            )
        expires_in = doc.get("expires_in") if isinstance(doc, dict) else None
        lifetime = (
            float(min(expires_in, MAX_TOKEN_LIFETIME))  # compared as given: a 400-digit int
            if isinstance(expires_in, int | float) and expires_in > 0  # is no float
            else DEFAULT_TOKEN_LIFETIME
        )
        margin = min(EXPIRY_MARGIN, lifetime / 2)
        return _Token(value, started + lifetime - margin)

    def _check_realm_transport(self, realm: str, repository: str | None) -> None:
        parts = urlsplit(realm)
        host = parts.netloc
        trusted = is_loopback(host) or host in self._options.insecure_registries
        if parts.scheme == "https" or trusted:
            return
        raise RegistryError(
            self.registry,
            repository,
            f"token realm {parts.scheme}://{host} is not HTTPS; refusing to send credentials "
            "(name it with --insecure-registry to allow this)",
        )


def _host(url: str) -> str:
    """The host of a URL a server gave, for an error line: short, and whatever the URL is."""
    try:
        host = urlsplit(url).netloc or url
    except ValueError:  # "http://[::1/token": not even splittable
        host = url
    return host if len(host) <= 100 else host[:100] + "..."
