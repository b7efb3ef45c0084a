"""Pure pieces of the OCI distribution protocol: headers in, facts out.

No I/O.  Covers what the client needs to read from and write into HTTP messages:
the manifest ``Accept`` header, ``WWW-Authenticate`` challenges (RFC 7235 auth-params),
the distribution error body, ``Retry-After`` and ``Content-Range``.
(Spec: https://github.com/opencontainers/distribution-spec/blob/main/spec.md)
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass, field

from hatchway.model import DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, OCI_INDEX, OCI_MANIFEST

#: Every manifest type hatchway reads, best first; schema 1 last so that a registry that only
#: has schema 1 says so (and we refuse it clearly) instead of answering 404.
MANIFEST_ACCEPT = ", ".join(
    [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST + ";q=0.9", DOCKER_SCHEMA1[1] + ";q=0.1"]
)

#: Statuses that mean "try again later" (a 429 may say when, in ``Retry-After``).
RETRY_STATUSES = frozenset({429, 502, 503, 504})

_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UPLOAD_RANGE = re.compile(r"(?:bytes=)?0-(\d+)")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lower-case) and parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (``Bearer realm="...",service="...",scope="..."``).

    Several challenges may share one header (``Basic realm="r", Bearer realm="..."``);
    unknown syntax yields what could be parsed.  Quoted values are unescaped.
    """
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s*", rest)
        if not m:
            break
        scheme = m.group(1).lower()
        rest = rest[m.end() :]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM.match(rest)
            if not pm or (pm.group(0).strip() == ""):
                break
            value = pm.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[pm.group(1).lower()] = value
            rest = rest[pm.end() :]
        challenges.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return challenges


@dataclass(frozen=True, slots=True)
class RegistryErrorBody:
    """The first entry of a distribution error body ``{"errors": [{"code", "message"}]}``."""

    code: str | None
    message: str | None


def parse_error_body(body: bytes) -> RegistryErrorBody:
    """The registry's own error code and message, when the body is distribution error JSON."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deeply: not ours
        return RegistryErrorBody(None, None)
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return RegistryErrorBody(None, None)
    code, message = errors[0].get("code"), errors[0].get("message")
    return RegistryErrorBody(
        code if isinstance(code, str) else None,
        message[:300] if isinstance(message, str) else None,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes '²'
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes FIRST-LAST/TOTAL`` → ``(first, last, total)`` (``total`` ``None`` for ``*``)."""
    if not value:
        return None
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def parse_upload_range(value: str | None) -> int | None:
    """The bytes an upload session holds, from its ``Range: 0-LAST`` header (``None`` when
    absent or malformed).  ``0-0`` is read as nothing held: distribution answers so for an
    empty session, and a wrong guess only makes the next chunk fail and the upload restart."""
    if not value:
        return None
    m = _UPLOAD_RANGE.fullmatch(value.strip())
    if not m:
        return None
    last = int(m.group(1))
    return last + 1 if last else 0


def pull_scope(repository: str) -> str:
    """The token scope for reading a repository: ``repository:NAME:pull``."""
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    """The token scope for writing into a repository: ``repository:NAME:pull,push``."""
    return f"repository:{repository}:pull,push"
