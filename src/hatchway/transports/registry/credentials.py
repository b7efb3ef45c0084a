"""Registry credentials: where they come from, and how they are kept out of sight.

Lookup order for a registry host (the first that has an entry wins):

1. the explicit ``USER:PASSWORD`` of :class:`~hatchway.transports.registry.options.RegistryOptions`
   (``--creds``), for every registry;
2. ``$REGISTRY_AUTH_FILE`` (containers' ``auth.json``);
3. ``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``: its credential helper for
   the host (``credHelpers``), else its default helper (``credsStore``), else its ``auths``.

Both files hold ``{"auths": {KEY: {"auth": base64("user:password")}}}`` (or ``username`` and
``password`` fields, or an ``identitytoken``).  ``KEY`` is a host (``127.0.0.1:5000``), a URL
(``https://host/v1/``) or, in containers' files, ``host/namespace[/repo]``; the most specific key
matching the repository wins.  Docker Hub's keys (``https://index.docker.io/v1/``,
``docker.io``, ...) all match ``docker.io``.

A **credential helper** ``NAME`` is the program ``docker-credential-NAME`` on ``PATH``:
``docker-credential-NAME get`` reads the server (``host[:port]``, or
``https://index.docker.io/v1/`` for Docker Hub) on stdin and prints
``{"ServerURL": ..., "Username": ..., "Secret": ...}`` — Docker's helper protocol.  It runs once
per server and run, in a worker thread (the client calls :meth:`CredentialLookup.find` there),
for at most ``HELPER_TIMEOUT`` seconds and ``MAX_HELPER_OUTPUT`` bytes of output, and is
killed at once when the operation is cancelled (:func:`hatchway.blocking.run_program`).
A helper that has nothing for the server (``credentials not found``) means "try ``auths``";
one that is missing or fails is remembered as a *problem* that the registry's 401 error then
names, instead of failing registries that need no credentials.  A user ``<token>`` marks an
identity token (a refresh token for the registry's token server, see ``auth``).

:class:`Credentials` never shows its password in ``repr`` or ``str``; nothing a helper prints
ever reaches an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hatchway.blocking import ProgramError, run_program
from hatchway.files import read_regular
from hatchway.limits import MAX_DOCUMENT_SIZE, MAX_HELPER_OUTPUT
from hatchway.reference import DOCKER_HUB

_HUB_KEYS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
#: The server name Docker uses for Docker Hub in config files and helper calls.
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
#: The user name that marks an identity token (Docker's convention).
IDENTITY_TOKEN_USER = "<token>"
#: Seconds a credential helper may take (a keychain may ask the user first).
HELPER_TIMEOUT = 60.0


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

    @property
    def identity_token(self) -> bool:
        """Whether the password is an identity (refresh) token for a token server."""
        return self.username == IDENTITY_TOKEN_USER

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __str__(self) -> str:
        return f"{self.username}:***"


class HelperError(Exception):
    """A credential helper is missing or failed (the message holds none of its output)."""


#: Runs ``docker-credential-NAME get`` for a server: credentials, ``None`` for "not found",
#: or :class:`HelperError`.  Replaceable in tests.
HelperRunner = Callable[[str, str], "Credentials | None"]


def run_helper(name: str, server: str) -> Credentials | None:
    """Ask the credential helper ``docker-credential-NAME`` for ``server``'s credentials
    (blocking: in a worker thread, where a cancellation kills the helper at once).

    The helper may take ``HELPER_TIMEOUT`` seconds and print ``MAX_HELPER_OUTPUT`` bytes on
    each of stdout and stderr; one that takes longer or prints more is killed and counts as
    failed (a credentials document is a few hundred bytes).
    """
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise HelperError(f"credential helper {program} is not on PATH")
    try:
        done = run_program(
            [path, "get"], server.encode(), timeout=HELPER_TIMEOUT, output_limit=MAX_HELPER_OUTPUT
        )
    except ProgramError as exc:
        raise HelperError(f"credential helper {program} {exc.reason}") from None
    if done.returncode != 0:
        if b"credentials not found" in done.stdout.lower() + done.stderr.lower():
            return None
        raise HelperError(f"credential helper {program} failed (exit status {done.returncode})")
    try:
        doc = json.loads(done.stdout)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    username = doc.get("Username") if isinstance(doc, dict) else None
    secret = doc.get("Secret") if isinstance(doc, dict) else None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        raise HelperError(f"credential helper {program} printed no Username and Secret")
    return Credentials(username or IDENTITY_TOKEN_USER, secret)


def credential_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The auth files consulted, in order (they need not exist)."""
    env = os.environ if environ is None else environ
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    files.append(Path(docker_dir) / "config.json")
    return files


def helper_server(domain: str) -> str:
    """What a helper is asked for: ``host[:port]``, or Docker Hub's historical URL."""
    return DOCKER_HUB_SERVER if domain == DOCKER_HUB else domain


class CredentialLookup:
    """Credentials per registry and repository, from the files and helpers, for one run.

    :meth:`find` reads the files each time (they are small) but runs each helper at most once
    per server; it may block on a helper, so async code calls it in a worker thread.
    ``problem(domain)`` says why a helper gave nothing, for the 401 error.
    """

    def __init__(self, files: list[Path] | None = None, runner: HelperRunner = run_helper) -> None:
        self._files = files
        self._runner = runner
        self._helped: dict[tuple[str, str], Credentials | None] = {}
        self._problems: dict[str, str] = {}

    def find(self, domain: str, repository: str) -> Credentials | None:
        for path in credential_files() if self._files is None else self._files:
            doc = _read_config(path)
            helper = _helper_for(doc, domain)
            if helper is not None:
                found = self._ask(helper, domain)
                if found is not None:
                    return found
            found = _best_match(_auths(doc), domain, repository)
            if found is not None:
                return found
        return None

    def problem(self, domain: str) -> str | None:
        return self._problems.get(domain)

    def _ask(self, helper: str, domain: str) -> Credentials | None:
        key = (helper, domain)
        if key not in self._helped:
            try:
                self._helped[key] = self._runner(helper, helper_server(domain))
            except HelperError as exc:
                self._helped[key] = None
                self._problems[domain] = str(exc)
        return self._helped[key]


def lookup(domain: str, repository: str, files: list[Path] | None = None) -> Credentials | None:
    """Credentials for ``domain``/``repository`` from the auth files and helpers, or ``None``.

    Unreadable or malformed files are skipped: a broken config means anonymous access, and
    the registry's 401 then says what is missing.
    """
    return CredentialLookup(files).find(domain, repository)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        # Never blocks on a FIFO, never reads a device or a huge file (files.read_regular).
        doc = json.loads(read_regular(path, MAX_DOCUMENT_SIZE))
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _auths(doc: dict[str, Any]) -> dict[str, object]:
    auths = doc.get("auths")
    return auths if isinstance(auths, dict) else {}


def _helper_for(doc: dict[str, Any], domain: str) -> str | None:
    """``credHelpers``' entry for the host, else ``credsStore`` (Docker's order)."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(name, str) and name and _normalise_key(key).split("/")[0] == domain:
                return name
    store = doc.get("credsStore")
    return store if isinstance(store, str) and store else None


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
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(IDENTITY_TOKEN_USER, token)
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
