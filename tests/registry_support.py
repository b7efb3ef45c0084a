"""Registry test support: push test images, a JWT token server, registry variants with auth.

* :func:`push_image` uploads an image (or index) from an OCI layout through the distribution
  push API (monolithic uploads), so the registry holds exactly the bytes we built.
* :class:`TokenServer` is a tiny Docker-style token server on 127.0.0.1 that signs RS256 JWTs
  with a throwaway key; its self-signed certificate is the registry's ``rootcertbundle`` and
  rides in each token's ``x5c`` header (distribution's token verifier accepts that chain).
* :func:`start_htpasswd_registry` / :func:`start_token_registry` start registries serving the
  storage of an existing (anonymous) registry behind Basic or token auth.
* :func:`build_test_images` builds the standard images and pushes them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from hatchway import RegistryOptions, RetryPolicy
from hatchway import save as hatchway_save
from hatchway.model import INDEX_TYPES, Platform
from hatchway.reference import Transport
from hatchway.testing.layout import BuiltImage, BuiltLayer, LayoutBuilder
from hatchway.transports.registry.source import RegistryStore
from hatchway.transports.router import Router
from tests.peers import Registry, run_command, start_registry

USER = "hatchway"
PASSWORD = "s3cret-Passw0rd"
WRONG_PASSWORD = "not-the-password-XYZ"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ------------------------------------------------------------------------------- pushing


def push_image(
    url: str,
    repository: str,
    tag: str | None,
    layout: Path,
    image: BuiltImage,
    *,
    headers: dict[str, str] | None = None,
) -> None:
    """Push ``image`` (manifest or index, with everything it references) to ``url``."""
    with httpx.Client(base_url=url, headers=headers or {}, timeout=60, trust_env=False) as http:
        _push_document(http, repository, layout, image.digest, image.media_type, tag)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _push_document(
    http: httpx.Client, repo: str, layout: Path, digest: str, media_type: str, tag: str | None
) -> None:
    raw = _blob(layout, digest)
    doc = json.loads(raw)
    if media_type in INDEX_TYPES:
        for child in doc["manifests"]:
            _push_document(http, repo, layout, child["digest"], child["mediaType"], None)
    else:
        for d in [doc["config"], *doc["layers"]]:
            push_blob(http, repo, _blob(layout, d["digest"]))
    ref = tag or digest
    r = http.put(f"/v2/{repo}/manifests/{ref}", content=raw, headers={"Content-Type": media_type})
    r.raise_for_status()


def push_blob(http: httpx.Client, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
        return digest
    r = http.post(f"/v2/{repo}/blobs/uploads/")
    r.raise_for_status()
    location = r.headers["location"]
    sep = "&" if "?" in location else "?"
    r = http.put(
        f"{location}{sep}digest={digest}",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    r.raise_for_status()
    return digest


# ---------------------------------------------------------------------------- the images


@dataclass
class TestImages:
    """The images pushed to the test registry (repository → details)."""

    registry: Registry
    layout: Path
    builder: LayoutBuilder
    images: dict[str, BuiltImage] = field(default_factory=dict)
    layers: dict[str, BuiltLayer] = field(default_factory=dict)

    def name(self, repo_tag: str) -> str:
        return f"docker://{self.registry.host}/{repo_tag}"


def _noise(seed: int, size: int) -> bytes:
    """Incompressible but deterministic bytes (so gzip layers keep their size)."""
    return random.Random(seed).randbytes(size)


def build_test_images(registry: Registry, layout: Path) -> TestImages:
    """Build and push: a Docker schema2 image, an OCI image (gzip, zstd, plain layers), a
    multi-platform index, three images sharing base layers across repositories, and a
    ``big`` image with ~1.5 MiB incompressible layers for fault tests."""
    b = LayoutBuilder(layout)
    L = {
        "base": b.layer({"etc/os-release": b"ID=hatchway-test\n", "bin/": None}),
        "dock": b.layer({"app/docker": b"docker schema 2\n"}),
        "zstd": b.layer({"app/z": b"zstd layer\n" * 100}, compression="zstd"),
        "plain": b.layer({"app/p": b"plain layer\n"}, compression="none"),
        "amd": b.layer({"arch": b"amd64\n"}),
        "arm": b.layer({"arch": b"arm64\n"}),
        "fa": b.layer({"family/a": _noise(1, 200_000)}),
        "fb": b.layer({"family/b": _noise(2, 150_000)}),
        "fc": b.layer({"family/c": _noise(3, 100_000)}),
        "big1": b.layer({"big/1": _noise(11, 1_500_000)}),
        "big2": b.layer({"big/2": _noise(12, 1_500_000)}),
        "big3": b.layer({"big/3": _noise(13, 1_500_000)}),
    }
    host = Platform.host()
    other = "arm64" if host.architecture != "arm64" else "amd64"
    img = {
        "hw/docker:1": b.image([L["base"], L["dock"]], docker=True, created="2024-01-02T03:04:05Z"),
        "hw/oci:1": b.image([L["base"], L["zstd"], L["plain"]], created="2024-02-02T00:00:00Z"),
        "hw/family-a:1": b.image([L["base"], L["fa"]]),
        "hw/family-b:1": b.image([L["base"], L["fb"]]),
        "hw/family-c:1": b.image([L["base"], L["fa"], L["fc"]]),
        "hw/big:1": b.image([L["base"], L["big1"], L["big2"], L["big3"]]),
    }
    native = b.image([L["base"], L["amd"]], architecture=host.architecture, variant=host.variant)
    foreign = b.image([L["base"], L["arm"]], architecture=other, variant="v8")
    img["hw/multi:1"] = b.index([native, foreign])
    img["hw/multi-docker:1"] = b.index(
        [
            b.image([L["base"], L["amd"]], architecture=host.architecture, docker=True),
            b.image([L["base"], L["arm"]], architecture=other, variant="v8", docker=True),
        ],
        docker=True,
    )
    img["multi:native"] = native
    img["multi:foreign"] = foreign
    for name, image in img.items():
        if name.startswith("multi:"):
            continue
        repo, tag = name.rsplit(":", 1)
        push_image(registry.url, repo, tag, layout, image)
    return TestImages(registry, layout, b, img, L)


# ------------------------------------------------------------------------- basic auth


def start_htpasswd_registry(workdir: Path, storage: Path) -> Registry:
    """A registry behind Basic auth (bcrypt htpasswd) for ``USER``/``PASSWORD``."""
    workdir.mkdir(parents=True, exist_ok=True)
    line = run_command(["htpasswd", "-Bbn", USER, PASSWORD]).stdout.strip()
    (workdir / "htpasswd").write_text(line + "\n")
    return start_registry(
        workdir,
        {
            "storage": {"filesystem": {"rootdirectory": str(storage)}},
            "auth": {"htpasswd": {"realm": "hatchway-test", "path": str(workdir / "htpasswd")}},
        },
    )


# ------------------------------------------------------------------------- token auth


class TokenServer:
    """A Docker-style token server on 127.0.0.1 signing RS256 JWTs with a test key.

    ``users`` maps user → password; right credentials get ``pull``/``push`` on any repository,
    anonymous requests get no access unless ``anonymous_pull``.  ``lifetime`` sets
    ``expires_in``.  ``requests`` counts token requests; ``last_auth`` records whether the
    last one carried credentials.  ``refresh_tokens`` maps identity (refresh) tokens to users,
    exchanged with the OAuth2 ``refresh_token`` grant (``POST``); ``posts`` counts those.
    """

    SERVICE = "hatchway-test-registry"
    ISSUER = "hatchway-test-issuer"

    def __init__(self, workdir: Path, users: dict[str, str], *, lifetime: int = 300) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.lifetime = lifetime
        self.anonymous_pull = False
        self.requests = 0
        self.failures = 0
        self.posts = 0
        self.refresh_tokens: dict[str, str] = {}
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hatchway test token CA")])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-ca.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def registry_config(self) -> dict[str, Any]:
        return {
            "auth": {
                "token": {
                    "realm": self.realm,
                    "service": self.SERVICE,
                    "issuer": self.ISSUER,
                    "rootcertbundle": str(self.cert_path),
                }
            }
        }

    def token(self, subject: str, access: list[dict[str, Any]]) -> str:
        x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": subject,
            "aud": self.SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def _grant(
        self, authorization: str | None, scopes: list[str], subject: str = ""
    ) -> tuple[int, str | None]:
        if authorization:
            try:
                user, _, password = (
                    base64.b64decode(authorization.removeprefix("Basic ")).decode().partition(":")
                )
            except ValueError:
                return 401, None
            if self.users.get(user) != password:
                return 401, None
            subject = user
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            allowed = ["pull", "push"] if subject else (["pull"] if self.anonymous_pull else [])
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": "repository", "name": name, "actions": granted})
        return 200, self.token(subject, access)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                query = parse_qs(urlsplit(self.path).query)
                status, token = server._grant(
                    self.headers.get("Authorization"), query.get("scope", [])
                )
                if token is None:
                    server.failures += 1
                    body = b'{"details":"invalid credentials"}'
                else:
                    body = json.dumps(
                        {"token": token, "access_token": token, "expires_in": server.lifetime}
                    ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                server.posts += 1
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                ok = form.get("grant_type") == ["refresh_token"] and user is not None
                scopes = " ".join(form.get("scope", [])).split()
                status, token = server._grant(None, scopes, user or "") if ok else (401, None)
                body = (
                    json.dumps({"access_token": token, "expires_in": server.lifetime}).encode()
                    if token
                    else b'{"error":"invalid_grant"}'
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start_token_registry(workdir: Path, storage: Path, tokens: TokenServer) -> Registry:
    """A registry behind token auth, trusting ``tokens``' certificate."""
    config = tokens.registry_config()
    config["storage"] = {"filesystem": {"rootdirectory": str(storage)}}
    return start_registry(workdir, config)


# ------------------------------------------------------------- the shared lab and helpers


class Lab:
    """Everything registry tests share for the session: the anonymous registry with the test
    images, and (started on first use) a Basic-auth and a token-auth registry serving the
    same storage."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.registry = start_registry(workdir / "anon")
        self.images = build_test_images(self.registry, workdir / "layout")
        self._basic: Registry | None = None
        self._tokens: TokenServer | None = None
        self._token_registry: Registry | None = None

    @property
    def basic(self) -> Registry:
        if self._basic is None:
            self._basic = start_htpasswd_registry(self.workdir / "basic", self.registry.root)
        return self._basic

    @property
    def tokens(self) -> TokenServer:
        if self._tokens is None:
            self._tokens = TokenServer(self.workdir / "tokens", {USER: PASSWORD})
        return self._tokens

    @property
    def token_registry(self) -> Registry:
        if self._token_registry is None:
            self._token_registry = start_token_registry(
                self.workdir / "token", self.registry.root, self.tokens
            )
        return self._token_registry

    def close(self) -> None:
        for reg in (self._token_registry, self._basic, self.registry):
            if reg is not None:
                reg.stop()
        if self._tokens is not None:
            self._tokens.stop()


_LAB: Lab | None = None


def lab_session(tmp_path_factory: Any) -> Iterator[Lab]:
    """Body of each test module's session ``lab`` fixture: one :class:`Lab` per session."""
    global _LAB
    if _LAB is not None:
        yield _LAB
        return
    _LAB = Lab(tmp_path_factory.mktemp("registry-lab"))
    try:
        yield _LAB
    finally:
        _LAB.close()
        _LAB = None


class Sleeps:
    """An injectable backoff sleep that returns at once and records what was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def options(**changes: Any) -> RegistryOptions:
    """Test options: no credential files, instant backoff (unless given)."""
    changes.setdefault("retry", RetryPolicy(sleep=Sleeps()))
    changes.setdefault("use_credential_files", False)
    return RegistryOptions(**changes)


async def save_archive(
    names: list[str],
    out: Path,
    store: Any,
    *,
    archive_format: str = "docker",
    jobs: int = 8,
    platform: str | None = None,
    uncompressed_layers: bool = False,
) -> bytes:
    """Save ``names`` with the library API to ``out`` and return the archive's bytes."""
    await hatchway_save(
        names,
        out,
        store=store,
        format=archive_format,
        jobs=jobs,
        platform=platform,
        uncompressed_layers=uncompressed_layers,
    )
    return out.read_bytes()


async def save_from_registry(
    names: list[str], out: Path, opts: RegistryOptions, **kw: Any
) -> bytes:
    store = Router({Transport.DOCKER: RegistryStore(opts)})
    try:
        return await save_archive(names, out, store, **kw)
    finally:
        await store.aclose()
