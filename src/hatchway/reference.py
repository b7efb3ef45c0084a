"""Image names: parse, validate and normalise them as ``docker save`` does.

Pure: no I/O. The grammar is the distribution project's reference grammar (the one Docker,
containerd and skopeo share); the semantics are those of ``docker save`` (docs/names.md):

* ``repo`` names *every* tag of a repository; ``repo:tag`` one tag; ``repo@sha256:...`` the
  image whose manifest has that digest (no tag recorded).
* ``sha256:<hex>``, a full 64-hex ID, or any hex prefix name an image by its ID (the config
  digest).  A bare name that is valid both as a repository and as a hex prefix (``abc123``) is
  tried as a repository first and falls back to an ID lookup.
* Docker Hub names are familiar: ``busybox``, ``library/busybox``, ``docker.io/library/busybox``
  and ``index.docker.io/library/busybox`` are one repository, recorded as ``busybox``.
* ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` selects a registry instead of the local store.
* ``docker-archive:PATH[:REF]``, ``oci-archive:PATH[:REF]`` and ``oci:DIR[:REF]`` select an
  archive or an OCI layout directory (skopeo's transports): PATH ends at the first ``:``;
  REF is a name as recorded there, or ``@N`` (the N-th image, from 0).  Without REF: every
  image it holds.

Every name is parsed into an :class:`ImageQuery` whose :class:`Transport` says where it lives;
names are routed by that, never by their spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from hatchway.errors import InvalidReference

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
#: The prefix that routes a name to a registry (as skopeo spells its transport).
DOCKER_TRANSPORT = "docker://"

_NAME_TOTAL_MAX = 255
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_ANY_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_HEX = re.compile(r"[a-f0-9]+")
_FULL_HEX = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised repository reference, with at most a tag or a digest (or both).

    ``domain`` is the registry host (``docker.io`` for Docker Hub) and ``path`` the repository
    path within it, with Docker Hub's implicit ``library/`` made explicit.  ``registry`` is
    ``True`` for names given with the ``docker://`` transport.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    registry: bool = False

    def __post_init__(self) -> None:
        if not _is_domain(self.domain):
            raise InvalidReference(self.domain, "invalid registry host")
        for component in self.path.split("/"):
            if not _COMPONENT.fullmatch(component):
                raise InvalidReference(self.path, "invalid repository path")
        if self.tag is not None and not _TAG.fullmatch(self.tag):
            raise InvalidReference(self.tag, "invalid tag")
        if self.digest is not None and not _DIGEST.fullmatch(self.digest):
            raise InvalidReference(self.digest, "invalid digest (only sha256 is supported)")

    @property
    def name(self) -> str:
        """The fully qualified repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``user/app``, ``host:5000/app``."""
        if self.domain == DOCKER_HUB and not _looks_like_domain(self.path.split("/", 1)[0]):
            if self.path.startswith(_OFFICIAL_PREFIX) and self.path.count("/") == 1:
                return self.path[len(_OFFICIAL_PREFIX) :]
            return self.path
        # Keep the host, also for a Hub path like ``docker.io/a.b/c`` whose first component
        # would otherwise be read back as a host.
        return self.name

    def recorded_tag(self) -> str:
        """The ``name:tag`` written into ``RepoTags``/``repositories`` (``:latest`` explicit)."""
        return f"{self.familiar_name}:{self.tag or DEFAULT_TAG}"

    def qualified_tag(self) -> str:
        """The fully qualified ``name:tag``, as containerd's ``io.containerd.image.name``."""
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    def repository(self) -> Reference:
        """This reference without tag or digest."""
        return Reference(self.domain, self.path, registry=self.registry)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None, self.registry)

    def __str__(self) -> str:
        text = DOCKER_TRANSPORT + self.name if self.registry else self.familiar_name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


class Transport(Enum):
    """Where a name's image lives: the transport prefix it was written with."""

    #: No prefix: the local store.
    STORE = "store"
    #: ``docker://``: a registry.
    DOCKER = "docker"
    #: ``docker-archive:PATH[:REF]``: a ``docker save`` archive (any era, plain or compressed).
    DOCKER_ARCHIVE = "docker-archive"
    #: ``oci-archive:PATH[:REF]``: an OCI image layout in a tar (plain or compressed).
    OCI_ARCHIVE = "oci-archive"
    #: ``oci:DIR[:REF]``: an OCI image layout directory.
    OCI = "oci"

    @property
    def is_archive(self) -> bool:
        """Whether names of this transport carry a path (an archive or a layout directory)."""
        return self in _PATH_TRANSPORTS


_PATH_TRANSPORTS = frozenset({Transport.DOCKER_ARCHIVE, Transport.OCI_ARCHIVE, Transport.OCI})
#: The prefixes of the path transports, longest first (``oci-archive:`` before ``oci:``).
_PATH_PREFIXES = (
    ("docker-archive:", Transport.DOCKER_ARCHIVE),
    ("oci-archive:", Transport.OCI_ARCHIVE),
    ("oci:", Transport.OCI),
)
_SOURCE_INDEX = re.compile(r"@([0-9]{1,9})")


@dataclass(frozen=True, slots=True)
class ImageQuery:
    """One name from the command line, as what it may mean.

    ``transport`` says where to look.  ``reference`` is set when the text is a valid
    repository reference; ``id_prefix`` when it can name an image ID (lower-case hex, 1-64
    digits).  Both are set for a bare name like ``abc123``: the repository is tried first,
    then the ID (docs/names.md).
    """

    text: str
    reference: Reference | None
    id_prefix: str | None
    transport: Transport = Transport.STORE
    #: For the path transports: the archive or directory.
    path: str | None = None
    #: For the path transports: the REF after the path, as written (``None``: every image).
    archive_ref: str | None = None

    @property
    def registry(self) -> bool:
        return self.transport is Transport.DOCKER

    @property
    def source_index(self) -> int | None:
        """``N`` for a REF written ``@N``, else ``None``."""
        if self.archive_ref is None:
            return None
        m = _SOURCE_INDEX.fullmatch(self.archive_ref)
        return int(m.group(1)) if m else None


def parse_reference(text: str, *, registry: bool = False) -> Reference:
    """Parse ``[host[:port]/]path[:tag][@digest]`` into a normalised :class:`Reference`.

    Raises :class:`InvalidReference` with the reason when ``text`` does not parse.
    """
    if not text:
        raise InvalidReference(text, "empty name")
    if len(text) > 1024 or any(c.isspace() for c in text):
        raise InvalidReference(text, "names contain no whitespace")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _ANY_DIGEST.fullmatch(digest):
            raise InvalidReference(text, "invalid digest")
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(text, "only sha256 digests are supported")
    tag = None
    # A ':' after the last '/' starts the tag; one before it belongs to host:port.
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(text, "invalid tag")
    domain, path = _split_domain(text, remainder)
    if len(domain) + 1 + len(path) > _NAME_TOTAL_MAX:
        raise InvalidReference(text, f"repository name longer than {_NAME_TOTAL_MAX} characters")
    if _FULL_HEX.fullmatch(path.removeprefix(_OFFICIAL_PREFIX)) and domain == DOCKER_HUB:
        raise InvalidReference(text, "a repository name cannot be a 64-character hexadecimal ID")
    return Reference(domain, path, tag, digest, registry)


def _is_domain(text: str) -> bool:
    """A registry host, its port (if any) a TCP port: the grammar allows any digits, and
    ``host:99999`` would otherwise fail only when connecting, as "connection refused"."""
    if not _DOMAIN.fullmatch(text):
        return False
    _, colon, port = text.rpartition(":")
    return not (colon and port.isdigit()) or 0 < int(port) < 65536


def _split_domain(text: str, name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and (_looks_like_domain(first) or first != first.lower()):
        if not _is_domain(first):
            raise InvalidReference(text, "invalid registry host")
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = _OFFICIAL_PREFIX + path
    if not path:
        raise InvalidReference(text, "empty repository path")
    for component in path.split("/"):
        if not component:
            raise InvalidReference(text, "empty path component")
        if not _COMPONENT.fullmatch(component):
            if _COMPONENT.fullmatch(component.lower()):
                raise InvalidReference(text, "repository name must be lowercase")
            raise InvalidReference(text, f"invalid path component {component!r}")
    return domain, path


def _looks_like_domain(component: str) -> bool:
    """Docker's rule: a first component is a host if it has a dot or a port, or is localhost."""
    return "." in component or ":" in component or component == "localhost"


def parse_query(text: str, *, default: Transport = Transport.STORE) -> ImageQuery:
    """Parse one command-line name into an :class:`ImageQuery` (see the module docstring).

    A name without a transport prefix belongs to ``default`` (the local store for ``save``,
    a registry for ``pull``).
    """
    archive = parse_archive_name(text)
    if archive is not None:
        return archive
    if text.startswith(DOCKER_TRANSPORT):
        rest = text[len(DOCKER_TRANSPORT) :]
        return ImageQuery(text, parse_reference(rest, registry=True), None, Transport.DOCKER)
    if default is Transport.DOCKER and "://" not in text:
        return parse_query(DOCKER_TRANSPORT + text)
    if "://" in text:
        raise InvalidReference(
            text,
            "unknown transport (docker://, docker-archive:, oci-archive: and oci: are supported)",
        )
    if text.startswith("sha256:"):
        hexpart = text[len("sha256:") :]
        if _HEX.fullmatch(hexpart) and len(hexpart) <= 64:
            return ImageQuery(text, None, hexpart)
        raise InvalidReference(text, "an image ID is sha256: and up to 64 lower-case hex digits")
    if _FULL_HEX.fullmatch(text):
        return ImageQuery(text, None, text)
    ref = parse_reference(text)
    id_prefix = text if _HEX.fullmatch(text) else None
    return ImageQuery(text, ref, id_prefix)


def parse_archive_name(text: str) -> ImageQuery | None:
    """The query for ``text`` if it is written with a path transport (``docker-archive:``,
    ``oci-archive:``, ``oci:``), else ``None`` — for arguments that are paths unless they say
    otherwise (``load``, ``verify``).  Raises :class:`InvalidReference` as :func:`parse_query`."""
    for prefix, transport in _PATH_PREFIXES:
        if text.startswith(prefix):
            return _parse_path_query(text, text[len(prefix) :], transport)
    return None


def _parse_path_query(text: str, rest: str, transport: Transport) -> ImageQuery:
    """``PATH[:REF]`` as skopeo splits it: at the first ``:``.  A docker-archive REF must be a
    tagged name (``:latest`` implied) or ``@N``; an OCI REF is matched against the layout's
    annotations as written, so any non-empty text that is not ``@`` garbage is accepted."""
    path, sep, ref = rest.partition(":")
    if not path:
        raise InvalidReference(text, f"{transport.value}: needs a path")
    if not sep:
        return ImageQuery(text, None, None, transport, path, None)
    if not ref:
        raise InvalidReference(text, "empty reference after the path")
    if ref.startswith("@"):
        if not _SOURCE_INDEX.fullmatch(ref):
            raise InvalidReference(text, "an image index is @N, N a number from 0")
        return ImageQuery(text, None, None, transport, path, ref)
    reference = None
    if transport is Transport.DOCKER_ARCHIVE:
        reference = parse_reference(ref)
        if reference.digest is not None:
            raise InvalidReference(text, "an archive records tags, not digests; use NAME:TAG or @N")
        if reference.tag is None:
            reference = reference.with_tag(DEFAULT_TAG)
    elif any(c.isspace() for c in ref):
        raise InvalidReference(text, "names contain no whitespace")
    return ImageQuery(text, reference, None, transport, path, ref)


def parse_stored_name(annotation: str) -> Reference | None:
    """The tagged reference a store's annotation names, or ``None`` if it names none.

    Used for ``io.containerd.image.name`` and for ``org.opencontainers.image.ref.name``
    values that carry a repository (``busybox:latest``, ``host:5000/app:v1``).  A bare tag
    (``latest``, as umoci and others write) names no repository, so it yields ``None``;
    such an image is still reachable by its ID and digest.  A name without a tag means
    ``:latest``; a name with only a digest records no tag and yields ``None``.
    """
    if ":" not in annotation and "/" not in annotation:
        return None
    try:
        ref = parse_reference(annotation)
    except InvalidReference:
        return None
    if ref.tag is None:
        if ref.digest is not None:
            return None
        ref = ref.with_tag(DEFAULT_TAG)
    return Reference(ref.domain, ref.path, ref.tag)
