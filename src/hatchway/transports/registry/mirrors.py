"""Mirrors and rewrites from containers-registries.conf(5): where a name is actually read from.

The file (TOML, version 2; the deprecated version 1 lists ``registries.insecure`` and
``registries.block`` are honoured too) comes from, first match wins:
``RegistryOptions.registries_conf`` (``--registries-conf``), ``$CONTAINERS_REGISTRIES_CONF``
(both must exist), ``~/.config/containers/registries.conf``, ``/etc/containers/registries.conf``.
Drop-in directories (``registries.conf.d``) are not read.

The subset followed, with the containers tools' semantics:

* ``[[registry]]`` tables are chosen by ``prefix`` (default: ``location``): the name
  ``HOST[:PORT]/PATH:TAG`` (Docker Hub names fully spelt: ``docker.io/library/busybox:latest``)
  must equal the prefix or continue it with ``/``, ``:`` or ``@``; the longest match wins.  A
  prefix ``*.example.com`` matches every host under ``example.com`` (its ``location`` must be
  empty: no rewrite).
* ``location`` rewrites the matched part of the name (``prefix = "docker.io/library"``,
  ``location = "mirror.corp/hub"`` reads ``busybox`` from ``mirror.corp/hub/busybox``).
* ``[[registry.mirror]]`` tables (``location``, ``insecure``, ``pull-from-mirror`` = ``all``,
  ``digest-only`` or ``tag-only``) are tried in order, then the primary location — always
  last, as the containers tools do.  ``mirror-by-digest-only = true`` on the registry keeps
  every mirror for digest references only (and may not be combined with ``pull-from-mirror``).
* ``insecure = true`` makes that endpoint an ``--insecure-registry`` (TLS unverified, plain
  HTTP if it does not speak TLS); ``blocked = true`` refuses every name under the prefix,
  mirrors included.
* ``unqualified-search-registries``, ``short-name-mode`` and ``[aliases]`` are ignored: a short
  name always means Docker Hub (as for Docker), so a saved archive never depends on a search
  order.  Unknown keys are ignored.

Mirrors are transparent: the names recorded in an archive or a store are the names asked for.
Mirrors are for reading only: :meth:`RegistriesConf.push_endpoint` never returns one.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hatchway.errors import ConfigError, InvalidReference, RegistryError
from hatchway.reference import DEFAULT_TAG, Reference, parse_reference
from hatchway.transports.registry.options import RegistryOptions

REGISTRIES_CONF_ENV = "CONTAINERS_REGISTRIES_CONF"
SYSTEM_REGISTRIES_CONF = "/etc/containers/registries.conf"
#: A registries.conf larger than this is refused (it is read whole).
MAX_REGISTRIES_CONF = 1 << 20


class PullFromMirror(Enum):
    """Which references a mirror serves (``pull-from-mirror``)."""

    ALL = "all"
    DIGEST_ONLY = "digest-only"
    TAG_ONLY = "tag-only"


@dataclass(frozen=True, slots=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: PullFromMirror = PullFromMirror.ALL


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One ``[[registry]]`` table."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to read an image from: the name there, and how to connect."""

    reference: Reference
    insecure: bool = False
    mirror: bool = False

    @property
    def host(self) -> str:
        return self.reference.domain

    def client_options(self, options: RegistryOptions) -> RegistryOptions:
        """``options`` for a client of this endpoint's host (insecure if it is)."""
        return options.with_insecure(self.host) if self.insecure else options


@dataclass(frozen=True, slots=True)
class RegistriesConf:
    """A parsed registries.conf (``path`` is ``None`` when none was found)."""

    entries: tuple[RegistryEntry, ...] = ()
    path: str | None = None

    def find(self, ref: Reference) -> tuple[RegistryEntry, int] | None:
        """The entry whose prefix matches ``ref`` longest, with the matched length."""
        name = _full_name(ref)
        best: tuple[RegistryEntry, int] | None = None
        for entry in self.entries:
            length = _match(name, entry.prefix)
            if length > 0 and (best is None or length > best[1]):
                best = (entry, length)
        return best

    def pull_endpoints(self, ref: Reference) -> tuple[Endpoint, ...]:
        """Where to read ``ref`` from, in order: the mirrors that apply, then the primary
        location.  Raises :class:`RegistryError` when ``ref`` is blocked."""
        found = self.find(ref)
        if found is None:
            return (Endpoint(ref),)
        entry, length = found
        if entry.blocked:
            raise RegistryError(
                ref.domain,
                ref.path,
                f"{_full_name(ref)} is blocked by {self.path} (prefix {entry.prefix!r})",
            )
        by_digest = ref.digest is not None
        endpoints: list[Endpoint] = []
        for mirror in entry.mirrors:
            if entry.mirror_by_digest_only and not by_digest:
                continue
            if mirror.pull_from_mirror is PullFromMirror.DIGEST_ONLY and not by_digest:
                continue
            if mirror.pull_from_mirror is PullFromMirror.TAG_ONLY and by_digest:
                continue
            endpoints.append(
                Endpoint(self._rewrite(ref, length, mirror.location), mirror.insecure, True)
            )
        primary = self._rewrite(ref, length, entry.location) if entry.location else ref
        endpoints.append(Endpoint(primary, entry.insecure))
        return tuple(endpoints)

    def push_endpoint(self, ref: Reference) -> Endpoint:
        """Where to write ``ref``: the name itself, never a mirror and never rewritten (as the
        containers tools push); insecure when its entry says so."""
        found = self.find(ref)
        return Endpoint(ref, found is not None and found[0].insecure)

    def _rewrite(self, ref: Reference, length: int, location: str) -> Reference:
        text = location + _full_name(ref)[length:]
        try:
            return parse_reference(text, registry=True)
        except InvalidReference as exc:
            raise ConfigError(
                self.path or "registries.conf",
                f"location {location!r} turns {_full_name(ref)} into {text!r}: {exc.reason}",
            ) from None


def _full_name(ref: Reference) -> str:
    text = ref.name
    if ref.tag is not None or ref.digest is None:
        text += f":{ref.tag or DEFAULT_TAG}"
    if ref.digest is not None:
        text += f"@{ref.digest}"
    return text


def _match(name: str, prefix: str) -> int:
    """Length of ``name`` that ``prefix`` matches (0: no match); see the module docstring."""
    if prefix.startswith("*."):
        host = name.split("/", 1)[0]
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return len(host) if hostname.endswith(prefix[1:]) else 0
    if name == prefix:
        return len(prefix)
    if not name.startswith(prefix) or len(name) == len(prefix):
        return 0
    separator = name[len(prefix)]
    if separator == "/" or separator == "@":
        return len(prefix)
    # ':' starts a tag only after the host: "example.com" must not match "example.com:5000/x".
    if separator == ":" and "/" in prefix:
        return len(prefix)
    return 0


# ---------------------------------------------------------------------------- loading


def registries_conf_path(
    options: RegistryOptions, env: Mapping[str, str] | None = None
) -> tuple[str | None, bool]:
    """The file to read and whether it must exist (see the module docstring)."""
    env = os.environ if env is None else env
    if options.registries_conf is not None:
        return options.registries_conf, True
    if env.get(REGISTRIES_CONF_ENV):
        return env[REGISTRIES_CONF_ENV], True
    home = Path(env.get("HOME") or Path.home())
    user = home / ".config" / "containers" / "registries.conf"
    for candidate in (user, Path(SYSTEM_REGISTRIES_CONF)):
        if candidate.exists():
            return str(candidate), False
    return None, False


def load_registries_conf(
    options: RegistryOptions, env: Mapping[str, str] | None = None
) -> RegistriesConf:
    """Find, read and parse the registries.conf ``options`` call for (blocking: run it in a
    worker thread).  Raises :class:`ConfigError` for a file that cannot be used."""
    if not options.use_registries_conf:
        return RegistriesConf()
    path, required = registries_conf_path(options, env)
    if path is None:
        return RegistriesConf()
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_REGISTRIES_CONF + 1)
    except FileNotFoundError:
        if required:
            raise ConfigError(path, "no such file") from None
        return RegistriesConf()
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_REGISTRIES_CONF:
        raise ConfigError(path, f"larger than {MAX_REGISTRIES_CONF} bytes")
    return parse_registries_conf(data, path)


def parse_registries_conf(data: bytes, path: str) -> RegistriesConf:
    """Parse the TOML text of a registries.conf (see the module docstring for the subset)."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    v1 = doc.get("registries")
    tables = doc.get("registry", [])
    if v1 is not None and tables:
        raise ConfigError(path, "mixes the version 1 [registries] and version 2 [[registry]]")
    if v1 is not None:
        return RegistriesConf(_version1(v1, path), path)
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(path, "registry must be an array of tables ([[registry]])")
    entries = tuple(_entry(table, path) for table in tables)
    prefixes = [e.prefix for e in entries]
    for prefix in prefixes:
        if prefixes.count(prefix) > 1:
            raise ConfigError(path, f"prefix {prefix!r} is configured more than once")
    return RegistriesConf(entries, path)


def _version1(v1: Any, path: str) -> tuple[RegistryEntry, ...]:
    entries: dict[str, RegistryEntry] = {}
    if not isinstance(v1, dict):
        raise ConfigError(path, "[registries] must be a table")
    for kind in ("insecure", "block"):
        hosts = v1.get(kind, {}).get("registries", []) if isinstance(v1.get(kind), dict) else []
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(path, f"registries.{kind}.registries must be a list of hosts")
        for host in hosts:
            location = _location(host, path, "registries." + kind)
            old = entries.get(location, RegistryEntry(location, location))
            entries[location] = RegistryEntry(
                location,
                location,
                insecure=old.insecure or kind == "insecure",
                blocked=old.blocked or kind == "block",
            )
    return tuple(entries.values())


def _entry(table: dict[str, Any], path: str) -> RegistryEntry:
    where = f"[[registry]] {table.get('prefix') or table.get('location')!r}"
    location = _location(_string(table, "location", path, where), path, where)
    prefix_text = _string(table, "prefix", path, where)
    if "pull-from-mirror" in table:
        raise ConfigError(path, f"{where}: pull-from-mirror belongs in [[registry.mirror]]")
    if prefix_text.startswith("*."):
        if location:
            raise ConfigError(path, f"{where}: a wildcard prefix cannot have a location")
        prefix = prefix_text
    elif prefix_text:
        prefix = _location(prefix_text, path, where)
        location = location or prefix
    elif location:
        prefix = location
    else:
        raise ConfigError(path, f"{where}: neither prefix nor location is set")
    by_digest_only = _bool(table, "mirror-by-digest-only", path, where)
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list) or not all(isinstance(m, dict) for m in raw_mirrors):
        raise ConfigError(path, f"{where}: mirror must be an array of tables")
    mirrors = []
    for raw in raw_mirrors:
        mirror_location = _location(_string(raw, "location", path, where), path, where)
        if not mirror_location:
            raise ConfigError(path, f"{where}: a mirror without a location")
        mode = _string(raw, "pull-from-mirror", path, where) or PullFromMirror.ALL.value
        try:
            pull_from = PullFromMirror(mode)
        except ValueError:
            raise ConfigError(
                path,
                f"{where}: pull-from-mirror {mode!r} is not one of all, digest-only, tag-only",
            ) from None
        if by_digest_only and "pull-from-mirror" in raw:
            raise ConfigError(
                path, f"{where}: mirror-by-digest-only and pull-from-mirror cannot be combined"
            )
        mirrors.append(Mirror(mirror_location, _bool(raw, "insecure", path, where), pull_from))
    return RegistryEntry(
        prefix,
        location,
        insecure=_bool(table, "insecure", path, where),
        blocked=_bool(table, "blocked", path, where),
        mirror_by_digest_only=by_digest_only,
        mirrors=tuple(mirrors),
    )


def _string(table: dict[str, Any], key: str, path: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(path, f"{where}: {key} must be a string")
    return value


def _bool(table: dict[str, Any], key: str, path: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(path, f"{where}: {key} must be true or false")
    return value


def _location(text: str, path: str, where: str) -> str:
    """A ``HOST[:PORT][/PATH...]`` value, checked; ``""`` stays empty."""
    text = text.strip().rstrip("/")
    if not text:
        return ""
    if "://" in text:
        raise ConfigError(path, f"{where}: {text!r}: no scheme allowed (HOST[:PORT][/PATH])")
    host = text.split("/", 1)[0]
    if not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(path, f"{where}: {text!r} does not start with a registry host")
    try:
        parse_reference(text if "/" in text else text + "/x", registry=True)
    except InvalidReference as exc:
        raise ConfigError(path, f"{where}: {text!r}: {exc.reason}") from None
    return text
