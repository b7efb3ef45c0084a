"""The errors hatchway raises, all under one root.

::

    HatchwayError                  anything hatchway reports to a user
    ├── InvalidArgument            an argument of an operation that cannot be used as given
    │   │                          (argument, message): a usage error, exit status 2
    │   └── InvalidReference       a name that cannot be parsed (name, reason)
    ├── NoSuchImage                a well-formed name the store does not hold (field: name)
    ├── AmbiguousReference         an ID prefix matching several images (name, candidates)
    ├── PlatformNotFound           an index without the requested platform (name, platform)
    ├── DigestMismatch             content whose sha256 differs from what was promised
    ├── MalformedContent           bytes that should be a manifest, index or config are not
                                   (raised by the pure core; a transport re-raises it as its
                                   own StoreError, naming itself)
    ├── StoreError                 a store that cannot be read or is malformed (store, message)
    │   ├── BlobNotFound           a blob the manifests name but the store lacks (digest)
    │   ├── UnsupportedMediaType   a manifest, index or layer type hatchway cannot export
    │   ├── ArchiveDamage          an archive that is not a well-formed tar, or a member of it
    │   │                          that is unusable (member)
    │   └── RegistryError          a registry refused or failed a request (registry,
    │                              repository, status, code, message)
    ├── OutputError                the archive cannot be written where it was asked to go
    └── ConfigError                a configuration file that cannot be used (path, message):
                                   registries.conf

Every error carries its facts as attributes; ``str(error)`` is the one line the CLI prints.
Foreign errors (``OSError``, ``json.JSONDecodeError``, ``zlib.error``) are translated into this
tree at the boundary where their meaning is known, so callers only ever catch
``HatchwayError``.
"""

from __future__ import annotations

from collections.abc import Sequence


class HatchwayError(Exception):
    """The root of every error hatchway raises on purpose."""


class InvalidArgument(HatchwayError):
    """The argument ``argument`` of an operation (its name in the API: ``names``, ``to``,
    ``compression_level``, ...) cannot be used as given, alone or with the others.

    It is the caller's mistake, found before anything was written — the command line
    reports it as a usage error (exit status 2), naming the option that set it.  What the
    store or a registry decides (an image that is not there, a platform an index lacks, a
    refused request) is not one of these.
    """

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        self.message = message
        super().__init__(message)


class InvalidReference(InvalidArgument):
    """``name`` is not a valid image reference or image ID (an image name given to an
    operation, or the reference an option holds: ``argument`` says which)."""

    def __init__(self, name: str, reason: str, *, argument: str = "names") -> None:
        self.name = name
        self.reason = reason
        super().__init__(argument, f"invalid reference format: {name!r}: {reason}")


class NoSuchImage(HatchwayError):
    """The store holds nothing under ``name`` (worded as ``docker save`` words it).

    ``detail`` adds what else was tried (the mirrors of a registry name), if anything.
    """

    def __init__(self, name: str, detail: str | None = None) -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"No such image: {name}" + (f" ({detail})" if detail else ""))


class AmbiguousReference(HatchwayError):
    """An image ID prefix matches more than one image."""

    def __init__(self, name: str, candidates: Sequence[str]) -> None:
        self.name = name
        self.candidates = tuple(candidates)
        shown = ", ".join(c[:12] for c in self.candidates[:5])
        super().__init__(
            f"ambiguous image ID prefix {name!r}: matches {len(self.candidates)} images ({shown})"
        )


class PlatformNotFound(HatchwayError):
    """A multi-platform image has no manifest for the requested platform."""

    def __init__(self, name: str, platform: str, available: Sequence[str] = ()) -> None:
        self.name = name
        self.platform = platform
        self.available = tuple(available)
        have = f" (it has: {', '.join(self.available)})" if self.available else ""
        super().__init__(f"{name}: no image for platform {platform}{have}")


class DigestMismatch(HatchwayError):
    """Bytes read for ``what`` hash to ``actual`` where ``expected`` was promised."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")


class MalformedContent(HatchwayError):
    """Bytes that should be a manifest, index or config are not.

    The pure core (``model.py``) raises it without knowing where the bytes came from; the
    transport that read them re-raises it as a :class:`StoreError` that names itself.
    """


class StoreError(HatchwayError):
    """A store cannot be read, or what it holds is malformed."""

    def __init__(self, store: str, message: str) -> None:
        self.store = store
        self.message = message
        super().__init__(f"{store}: {message}")


class BlobNotFound(StoreError):
    """A blob that a manifest or index names is missing from the store."""

    def __init__(self, store: str, digest: str) -> None:
        self.digest = digest
        super().__init__(store, f"blob {digest} not found")


class UnsupportedMediaType(StoreError):
    """A media type hatchway cannot export (schema 1 manifests, foreign layer types, ...)."""

    def __init__(self, store: str, media_type: str, what: str = "content") -> None:
        self.media_type = media_type
        super().__init__(store, f"unsupported media type for {what}: {media_type!r}")


class ArchiveDamage(StoreError):
    """The archive is not a well-formed tar, or a member of it is unusable.  ``member`` names
    the member (``None`` when the tar itself is broken)."""

    def __init__(self, store: str, message: str, member: str | None = None) -> None:
        self.member = member
        super().__init__(store, message)


class RegistryError(StoreError):
    """A registry answered a request with an error, or could not be reached.

    ``registry`` is the host (``127.0.0.1:5000``), ``repository`` the repository path (or
    ``None`` for registry-wide requests), ``status`` the HTTP status (``None`` when no answer
    came), ``code`` the registry's own error code from the distribution error body
    (``MANIFEST_UNKNOWN``, ``UNAUTHORIZED``, ...) and ``message`` its message or ours.  Never
    carries credentials or tokens.
    """

    def __init__(
        self,
        registry: str,
        repository: str | None,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.status = status
        self.code = code
        where = f"registry {registry}" + (f", repository {repository}" if repository else "")
        facts = " ".join(str(f) for f in (status, code) if f is not None)
        super().__init__(where, message + (f" (HTTP {facts})" if status is not None else ""))
        self.message = message


class OutputError(HatchwayError):
    """The archive cannot be written to the requested destination."""


class ConfigError(HatchwayError):
    """A configuration file hatchway follows (registries.conf) cannot be used."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")
