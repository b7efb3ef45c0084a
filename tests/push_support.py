"""Push test support: an empty registry to push into, names unique per test, what the
registry's access log says about uploads, and reading pushed images back with skopeo."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import Registry, Skopeo

_MANIFESTS = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A repository prefix of the test's own (lower-case, registry-safe): the start of its
    name, for reading logs, and a hash of all of it (parameters included), for uniqueness."""
    node = request.node.name
    slug = re.sub(r"[^a-z0-9]+", "-", node.lower().removeprefix("test_"))[:40].strip("-")
    return f"{slug}-{hashlib.sha256(node.encode()).hexdigest()[:8]}"


def settled_requests(registry: Registry) -> list[tuple[str, str, int]]:
    """The registry's access log, once it stopped growing (a line is written just after the
    response it describes, so the last one may trail the client by a moment)."""
    seen = registry.requests()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = registry.requests()
        if now == seen:
            break
        seen = now
    return seen


@dataclass(frozen=True)
class Traffic:
    """What a stretch of the access log says about blobs."""

    requests: list[tuple[str, str, int]]

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for m, uri, _ in self.requests if m == method and re.search(pattern, uri))

    @property
    def upload_starts(self) -> int:
        """``POST /blobs/uploads/`` that are not mounts: uploads begun."""
        return sum(
            1
            for m, uri, _ in self.requests
            if m == "POST" and "/blobs/uploads/" in uri and "mount=" not in uri
        )

    @property
    def upload_bodies(self) -> int:
        """``PATCH`` and ``PUT`` into upload sessions: bytes sent."""
        return sum(1 for m, uri, _ in self.requests if m in ("PATCH", "PUT") and "/uploads/" in uri)

    def mounts(self, digest: str | None = None) -> int:
        """Successful cross-repository mounts (of ``digest``)."""
        return sum(
            1
            for m, uri, status in self.requests
            if m == "POST" and "mount=" in uri and status == 201 and (not digest or digest in uri)
        )

    def commits(self, digest: str) -> int:
        """Uploads committed under ``digest`` (``PUT ...?digest=``)."""
        return sum(
            1
            for m, uri, status in self.requests
            if m == "PUT" and f"digest={digest}" in uri and status == 201
        )

    def blob_reads(self) -> int:
        return sum(1 for m, uri, _ in self.requests if m == "GET" and "/blobs/sha256:" in uri)


def traffic_since(registry: Registry, mark: int) -> Traffic:
    return Traffic(settled_requests(registry)[mark:])


@dataclass(frozen=True)
class ReadBack:
    """An image skopeo copied out of the registry (verifying every digest on the way)."""

    manifest: dict[str, Any]
    image_id: str
    layout: Path


def read_back(skopeo: Skopeo, name: str, layout: Path) -> ReadBack:
    """``skopeo copy docker://NAME oci:LAYOUT:x``: skopeo checks every blob against its
    digest (and the config's diffIDs) while it copies, so a wrong byte fails here.

    The image ID is the digest of the config the registry serves (``skopeo inspect --config
    --raw``, which checks it against the manifest): converting a Docker manifest to OCI, skopeo
    re-serialises the config, so the copy's own config digest is not the image's ID."""
    skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:x")
    index = json.loads((layout / "index.json").read_text())
    ref = "org.opencontainers.image.ref.name"
    entry = next(m for m in index["manifests"] if m["annotations"][ref] == "x")
    digest = entry["digest"].removeprefix("sha256:")
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    config = skopeo("inspect", "--tls-verify=false", "--raw", "--config", f"docker://{name}")
    image_id = "sha256:" + hashlib.sha256(config.stdout.encode()).hexdigest()
    return ReadBack(manifest, image_id, layout)


def manifest_of(registry: Registry, repository: str, reference: str) -> tuple[int, Any]:
    """``GET`` a manifest straight from the registry: its status and (on 200) its JSON."""
    r = httpx.get(
        f"{registry.url}/v2/{repository}/manifests/{reference}",
        headers={"Accept": _MANIFESTS},
        trust_env=False,
    )
    return r.status_code, (r.json() if r.status_code == 200 else {})


def tags_of(registry: Registry, repository: str) -> list[str]:
    """The tags the registry lists for ``repository`` (none for an unknown one)."""
    r = httpx.get(f"{registry.url}/v2/{repository}/tags/list", trust_env=False)
    return list(r.json().get("tags") or []) if r.status_code == 200 else []
