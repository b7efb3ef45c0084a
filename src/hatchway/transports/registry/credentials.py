"""Registry credentials: where they come from, and how they are kept out of sight.

Lookup order for a registry host (the first that has an entry wins):

1. the explicit ``USER:PASSWORD`` of :class:`~hatchway.transports.registry.options.RegistryOptions`
   (``--creds``), for every registry;
2. ``$REGISTRY_AUTH_FILE`` (containers' ``auth.json``);
3. ``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``.

Both files hold ``{"auths": {KEY: {"auth": base64("user:password")}}}`` (or ``username`` and
``password`` fields).  ``KEY`` is a host (``127.0.0.1:5000``), a URL (``https://host/v1/``) or,
in containers' files, ``host/namespace[/repo]``; the most specific key matching the repository
wins.  Docker Hub's keys (``https://index.docker.io/v1/``, ``docker.io``, ...) all match
``docker.io``.  Credential helpers (``credsStore``, ``credHelpers``) and identity tokens are
not supported: such entries are skipped and the request is made anonymously.

:class:`Credentials` never shows its password in ``repr`` or ``str``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.files import read_regular
from hatchway.limits import MAX_DOCUMENT_SIZE
from hatchway.reference import DOCKER_HUB

_HUB_KEYS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password (or token) for Basic auth and token requests."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``USER:PASSWORD`` (the password may contain ``:``)."""
        username, sep, password = text.partition(":")
        if not sep or not username:
            raise ValueError("credentials must be USER:PASSWORD")
        return cls(username, password)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __str__(self) -> str:
        return f"{self.username}:***"


def credential_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The auth files consulted, in order (they need not exist)."""
    env = os.environ if environ is None else environ
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    files.append(Path(docker_dir) / "config.json")
    return files


def lookup(domain: str, repository: str, files: list[Path] | None = None) -> Credentials | None:
    """Credentials for ``domain``/``repository`` from the auth files, or ``None``.

    Unreadable or malformed files are skipped: a broken config means anonymous access, and
    the registry's 401 then says what is missing.
    """
    for path in credential_files() if files is None else files:
        auths = _read_auths(path)
        found = _best_match(auths, domain, repository)
        if found is not None:
            return found
    return None


def _read_auths(path: Path) -> dict[str, object]:
    try:
        # Never blocks on a FIFO, never reads a device or a huge file (files.read_regular).
        doc = json.loads(read_regular(path, MAX_DOCUMENT_SIZE))
    except (OSError, ValueError, RecursionError):
        return {}
    auths = doc.get("auths") if isinstance(doc, dict) else None
    return auths if isinstance(auths, dict) else {}


def _normalise_key(key: str) -> str:
    """``https://host/v2/`` → ``host``; ``host/ns/repo`` stays (a containers' path key)."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            host = key.split("/", 1)[0]
            return DOCKER_HUB if host in _HUB_KEYS else host
    key = key.rstrip("/")
    host, sep, rest = key.partition("/")
    if host in _HUB_KEYS:
        host = DOCKER_HUB
    return host + sep + rest


def _best_match(auths: dict[str, object], domain: str, repository: str) -> Credentials | None:
    target = f"{domain}/{repository}"
    best: tuple[int, Credentials] | None = None
    for key, entry in auths.items():
        norm = _normalise_key(key)
        if not (target == norm or target.startswith(norm + "/")):
            continue
        creds = _decode_entry(entry)
        if creds is not None and (best is None or len(norm) > best[0]):
            best = (len(norm), creds)
    return best[1] if best else None


def _decode_entry(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    auth = entry.get("auth")
    if not isinstance(auth, str) or not auth:
        return None
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
        return Credentials.parse(decoded)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
