"""The push protocol against a registry of our own (``httpx.MockTransport``), for what the
real one will not do on demand: refuse a mount with 202, answer with relative or foreign
upload locations, refuse a chunk's range, report another digest, fail manifest puts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import hatchway
from hatchway import RegistryError, RegistryOptions, RetryPolicy
from hatchway.transports.registry.client import RegistryClient
from hatchway.transports.registry.upload import BlobUploader, StagedBlob
from tests.registry_support import Sleeps
from tests.support import Family

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1:5998"


@dataclass
class FakeRegistry:
    """Just enough of the distribution API: blobs per repository, upload sessions, mounts,
    manifests.  ``hooks`` may answer a request first (return a response) to inject faults."""

    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    sessions: dict[str, bytearray] = field(default_factory=dict)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    auth_seen: list[tuple[str, str | None]] = field(default_factory=list)
    opened: int = 0
    refuse_mounts: bool = False
    relative: bool = False
    upload_host: str | None = None
    hooks: list[Callable[[httpx.Request], httpx.Response | None]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append((request.method, str(request.url)))
        self.auth_seen.append((request.url.host, request.headers.get("authorization")))
        for hook in self.hooks:
            answer = hook(request)
            if answer is not None:
                return answer
        query = parse_qs(urlsplit(str(request.url)).query)
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]+)", path):
            found = m.group(2) in self.blobs.get(m.group(1), {})
            return httpx.Response(200 if found else 404)
        if m := re.fullmatch(r"/v2/(.+)/blobs/uploads/", path):
            repo = m.group(1)
            if "mount" in query and not self.refuse_mounts:
                digest, source = query["mount"][0], query["from"][0]
                if digest in self.blobs.get(source, {}):
                    self.blobs.setdefault(repo, {})[digest] = self.blobs[source][digest]
                    return httpx.Response(201)
            return self._new_session(repo)
        if m := re.fullmatch(r"/(?:v2/(.+)/blobs/)?uploads/([0-9]+)", path):
            return self._session(request, m.group(1) or "", m.group(2), query)
        if m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            self.manifests[(m.group(1), m.group(2))] = request.read()
            digest = "sha256:" + hashlib.sha256(request.content).hexdigest()
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        return httpx.Response(404)

    def _new_session(self, repo: str) -> httpx.Response:
        self.opened += 1
        uuid = str(self.opened)
        self.sessions[uuid] = bytearray()
        location = f"/v2/{repo}/blobs/uploads/{uuid}"
        if self.upload_host:
            location = f"http://{self.upload_host}/uploads/{uuid}?repo={repo}"
        elif not self.relative:
            location = f"http://{HOST}{location}"
        return httpx.Response(202, headers={"Location": location, "Range": "0-0"})

    def _session(
        self, request: httpx.Request, repo: str, uuid: str, query: dict[str, list[str]]
    ) -> httpx.Response:
        repo = repo or query["repo"][0]
        data = self.sessions[uuid]
        here = str(request.url).split("?")[0] + (f"?repo={repo}" if "repo" in query else "")
        if request.method == "GET":
            held = f"0-{max(len(data) - 1, 0)}"
            return httpx.Response(204, headers={"Range": held, "Location": here})
        if request.method == "DELETE":
            del self.sessions[uuid]
            return httpx.Response(204)
        body = request.read()
        if request.method == "PATCH":
            start = int(request.headers["content-range"].split("-")[0])
            if start != len(data):
                return httpx.Response(416)
            data += body
            return httpx.Response(202, headers={"Range": f"0-{len(data) - 1}", "Location": here})
        data += body  # PUT: the last bytes, then commit under ?digest=
        digest = query["digest"][0]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
        self.blobs.setdefault(repo, {})[digest] = bytes(data)
        del self.sessions[uuid]
        return httpx.Response(201, headers={"Docker-Content-Digest": digest})


def _options(fake: FakeRegistry, sleeps: Sleeps | None = None, **kw: object) -> RegistryOptions:
    return RegistryOptions(
        use_credential_files=False,
        retry=RetryPolicy(retries=3, sleep=sleeps or Sleeps()),
        transport=httpx.MockTransport(fake),
        **kw,  # type: ignore[arg-type]
    )


def _staged(tmp_path: Path, data: bytes) -> StagedBlob:
    path = tmp_path / "blob"
    path.write_bytes(data)
    return StagedBlob(str(path), "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


async def test_a_mount_answered_with_202_is_uploaded_instead(family: Family) -> None:
    fake = FakeRegistry(refuse_mounts=True)
    result = await hatchway.push(["app:1.0", "tools"], f"{HOST}/m", store=family.root,
                                 registry=_options(fake))  # fmt: skip
    assert result.blobs_mounted == 0
    base = family.layers["base"].digest
    assert base in fake.blobs["m/library/app"] and base in fake.blobs["m/library/tools"]
    assert any(m == "DELETE" for m, _ in fake.log)  # the session the refused mount opened
    assert fake.sessions == {}  # ... and none left open by the uploads either


async def test_relative_and_foreign_upload_locations(tmp_path: Path) -> None:
    """A relative Location is the registry's; one on another host gets no credentials."""
    data = b"blob bytes" * 100
    for fake in (FakeRegistry(relative=True), FakeRegistry(upload_host="uploads.example:9000")):
        client = RegistryClient(HOST, _options(fake, creds="user:secret-pw"))
        fake.hooks.append(_challenge_once())
        try:
            await BlobUploader(client).upload("app", _staged(tmp_path, data))
        finally:
            await client.aclose()
        assert fake.blobs["app"]["sha256:" + hashlib.sha256(data).hexdigest()] == data
        for host, auth in fake.auth_seen[1:]:
            assert (auth is not None) == (host == "127.0.0.1"), (host, auth)


def _challenge_once() -> Callable[[httpx.Request], httpx.Response | None]:
    sent: list[int] = []

    def hook(request: httpx.Request) -> httpx.Response | None:
        if not sent:
            sent.append(1)
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        return None

    return hook


async def test_a_refused_chunk_is_resumed_from_what_the_registry_holds(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10 KiB in 4 KiB chunks
    fake = FakeRegistry()
    refused: list[int] = []

    def refuse_second_chunk(request: httpx.Request) -> httpx.Response | None:
        second = request.method == "PATCH" and request.headers["content-range"][:5] == "4096-"
        if second and not refused:
            refused.append(1)
            return httpx.Response(416)
        return None

    fake.hooks.append(refuse_second_chunk)
    client = RegistryClient(HOST, _options(fake))
    try:
        uploader = BlobUploader(client, monolithic_max=1024, chunk=4096)
        await uploader.upload("app", _staged(tmp_path, data))
    finally:
        await client.aclose()
    methods = [m for m, _ in fake.log]
    assert methods.count("POST") == 1 and methods.count("GET") == 1  # resumed, not restarted
    assert methods.count("PATCH") == 4  # 3 chunks, one of them twice
    assert fake.blobs["app"]["sha256:" + hashlib.sha256(data).hexdigest()] == data


async def test_a_registry_that_stores_another_digest_is_an_error(tmp_path: Path) -> None:
    fake = FakeRegistry()
    other = "sha256:" + "0" * 64

    def lie(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PUT" and "digest=" in str(request.url):
            request.read()
            return httpx.Response(201, headers={"Docker-Content-Digest": other})
        return None

    fake.hooks.append(lie)
    client = RegistryClient(HOST, _options(fake))
    try:
        with pytest.raises(RegistryError, match=f"registry stored it as {other}"):
            await BlobUploader(client).upload("app", _staged(tmp_path, b"x" * 10))
    finally:
        await client.aclose()


async def test_manifest_puts_are_retried_and_checked(family: Family) -> None:
    fake = FakeRegistry()
    failures: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path and len(failures) < 2:
            failures.append(1)
            return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE"}]})
        return None

    fake.hooks.append(flaky)
    sleeps = Sleeps()
    result = await hatchway.push(["app:1.0"], f"{HOST}/m", store=family.root,
                                 registry=_options(fake, sleeps))  # fmt: skip
    assert len(failures) == 2 and len(sleeps.delays) >= 2
    assert fake.manifests[("m/library/app", "1.0")]
    assert result.images[0].digest == family.images["app1"].digest

    liar = FakeRegistry()

    def wrong_digest(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path:
            return httpx.Response(201, headers={"Docker-Content-Digest": "sha256:" + "1" * 64})
        return None

    liar.hooks.append(wrong_digest)
    with pytest.raises(RegistryError, match="the registry stored it as sha256:1111"):
        await hatchway.push(["app:1.0"], f"{HOST}/m", store=family.root, registry=_options(liar))
