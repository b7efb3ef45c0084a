"""Hostile registries, each a scripted answer no real registry gives, through the real CLI.

A registry (or its token server) is someone else's machine: its answers may nest JSON
100 000 deep, redirect in a loop, or never end.  Each case must end as the store cases of
``test_hostile.py`` do: exit 1, one ``hatchway: error:`` line, no traceback, nothing written,
within a deadline and bounded memory.  The server is a scripted one on loopback because no
real registry misbehaves on request; the repository name picks the misbehaviour.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.bounded import MAX_RSS, assert_one_error_line, run_bounded

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
NESTED = b"[" * 100_000 + b"]" * 100_000
NESTED_CONFIG_DIGEST = "sha256:" + hashlib.sha256(NESTED).hexdigest()
ENDLESS_CHUNK = b"x" * (64 << 10)


def _manifest_with_nested_config() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": NESTED_CONFIG_DIGEST,
                "size": len(NESTED),
            },
            "layers": [],
        }
    ).encode()


# A layer big enough to be fetched in ranges, whose blob is a 200 that never ends.
LAYER_CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
    }
).encode()
LAYER_CONFIG_DIGEST = "sha256:" + hashlib.sha256(LAYER_CONFIG).hexdigest()


def _manifest_with_endless_layer(size: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": LAYER_CONFIG_DIGEST,
                "size": len(LAYER_CONFIG),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",  # no inflater to trip
                    "digest": "sha256:" + "1" * 64,
                    "size": size,
                }
            ],
        }
    ).encode()


class HostileRegistry(BaseHTTPRequestHandler):
    """``/v2/hostile/<case>/...`` misbehaves as ``<case>`` says; ``/token`` likewise."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].split("/")
        if parts[1] == "token":
            self._token(parse_qs(urlsplit(self.path).query).get("case", [""])[0])
            return
        case = parts[3] if len(parts) > 3 else ""
        if case == "nested-manifest":
            self._send(200, NESTED, OCI_MANIFEST)
        elif case == "nested-config":
            if "/blobs/" in self.path:
                self._send(200, NESTED, "application/octet-stream")
            else:
                self._send(200, _manifest_with_nested_config(), OCI_MANIFEST)
        elif case in ("endless-layer", "endless-small-layer"):  # every answer a 200
            if self.path.endswith(LAYER_CONFIG_DIGEST):
                self._send(200, LAYER_CONFIG, "application/octet-stream")
            elif "/blobs/" in self.path:
                self._endless(200, "application/octet-stream")
            else:
                size = (20 << 20) if case == "endless-layer" else (1 << 20)
                self._send(200, _manifest_with_endless_layer(size), OCI_MANIFEST)
        elif case == "nested-error-body":
            self._send(400, b'{"errors":' + NESTED + b"}", "application/json")
        elif case == "redirect-loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif case == "endless-manifest":
            self._endless(200, OCI_MANIFEST)
        elif case == "huge-content-length":
            self.send_response(200)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.send_header("Content-Length", str(10 << 30))
            self.end_headers()
        elif case == "retry-after-superscript":  # '²' is a digit to str.isdigit()
            self.send_response(429)
            self.send_header("Retry-After", "\u00b2")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif case == "realm-not-a-url":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="http://[::1/token"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif case == "redirect-not-a-url":
            self.send_response(302)
            self.send_header("Location", "http://[::1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif case in ("endless-token", "nested-token", "token-with-newline", "token-forever"):
            realm = f"http://{self.headers['Host']}/token?case={case}"  # host:port asked
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="hostile"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"", "text/plain")

    def _token(self, case: str) -> None:
        if case == "nested-token":
            self._send(200, b'{"token":' + NESTED + b"}", "application/json")
        elif case == "token-with-newline":  # a secret that h11 would refuse in a header
            self._send(200, json.dumps({"token": "SECRET-TOKEN\n"}).encode(), "application/json")
        elif case == "token-forever":  # expires_in no float can hold; then the 401 again
            self._send(200, b'{"token":"t","expires_in":1' + b"0" * 400 + b"}", "application/json")
        else:
            self._endless(200, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endless(self, status: int, content_type: str) -> None:
        """A body that never ends (until the client hangs up): chunked, no length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = f"{len(ENDLESS_CHUNK):x}\r\n".encode() + ENDLESS_CHUNK + b"\r\n"
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:  # the client hung up: what we wanted
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def hostile_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileRegistry)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


CASES = {
    # item 3: nesting that overflows Python's parser, in every answer that is parsed
    "nested-manifest": "JSON nested too deeply",
    "nested-config": "JSON nested too deeply",
    "nested-error-body": "manifest 1: Bad Request (HTTP 400)",
    "nested-token": "token server sent no token",  # (and the realm kept its ?case= query)
    # item 3: a redirect loop is a registry error, not httpx's exception
    "redirect-loop": "too many redirects",
    # item 2: answers that never end are cut while reading, not after
    "endless-token": f"sent more than {1 << 20} bytes",
    "endless-manifest": "manifest 1 is too large",
    # a big layer is fetched in ranges, each cut where it ends: the bytes do not hash
    "endless-layer": "digest mismatch",
    "endless-small-layer": "blob is longer than its descriptor's 1048576 bytes",
    "huge-content-length": "is too large (10737418240 bytes)",
    # answers that are malformed values rather than malformed documents
    "retry-after-superscript": "Too Many Requests (HTTP 429)",
    "realm-not-a-url": "the token realm http://[::1/token is not a valid URL",
    "redirect-not-a-url": "bad redirect (Invalid URL in location header",
    "token-with-newline": "token server sent an invalid token (not header-safe)",
    "token-forever": "Unauthorized (HTTP 401)",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_registry(hostile_registry: str, tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run_bounded(
        ["save", "-q", "-o", str(out / "o.tar"), f"docker://{hostile_registry}/hostile/{case}:1"],
        env={"DOCKER_CONFIG": str(tmp_path), "REGISTRY_AUTH_FILE": ""},
    )
    line = assert_one_error_line(result)
    assert CASES[case] in line, line
    assert "SECRET" not in line  # a token is a secret, in errors too
    assert list(out.iterdir()) == []
    assert result.max_rss < MAX_RSS, f"peak RSS {result.max_rss >> 20} MiB"
