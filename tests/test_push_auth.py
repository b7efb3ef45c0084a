"""Pushing into registries that want credentials: htpasswd Basic auth and token auth (our
JWT token server), from --creds, config files, Docker credential helpers (a real program on
PATH speaking the helper protocol) and identity tokens.  Without credentials a push fails
cleanly and tags nothing; no secret ever reaches an error or the command's output."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import hatchway
from hatchway import PushResult, RegistryError
from tests.peers import Registry
from tests.registry_support import (
    PASSWORD,
    USER,
    WRONG_PASSWORD,
    TokenServer,
    options,
    start_htpasswd_registry,
    start_token_registry,
)
from tests.support import Family
from tests.test_cli import error_line, run

pytestmark = pytest.mark.peers

HELPER_SECRET = "helper-Secret-9f8e7d"
REFRESH_TOKEN = "refresh-Token-1a2b3c"


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("push-basic")
    registry = start_htpasswd_registry(work / "registry", work / "data")
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("push-tokens"), {USER: PASSWORD})
    server.refresh_tokens[REFRESH_TOKEN] = USER
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, tokens: TokenServer
) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("push-token-registry")
    registry = start_token_registry(work / "registry", work / "data", tokens)
    try:
        yield registry
    finally:
        registry.stop()


async def _push(names: list[str], to: str, store: Path, **opts: object) -> PushResult:
    return await hatchway.push(names, to, store=store, registry=options(**opts))


def _tags(registry: Registry, repository: str) -> list[str]:
    """The tags a Basic-auth registry lists (asked with the right credentials)."""
    r = httpx.get(
        f"{registry.url}/v2/{repository}/tags/list", auth=(USER, PASSWORD), trust_env=False
    )
    return list(r.json().get("tags") or []) if r.status_code == 200 else []


def _no_secret(text: str) -> None:
    for secret in (PASSWORD, WRONG_PASSWORD, HELPER_SECRET, REFRESH_TOKEN):
        assert secret not in text
    assert "Bearer " not in text and "eyJ" not in text


# -- Basic ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_basic_auth_push_with_and_without_credentials(
    family: Family, basic: Registry, prefix: str
) -> None:
    to = f"{basic.host}/{prefix}"
    with pytest.raises(RegistryError) as anonymous:
        await _push(["app:1.0"], to, family.root)
    assert anonymous.value.status == 401 and "anonymously" in str(anonymous.value)
    with pytest.raises(RegistryError) as wrong:
        await _push(["app:1.0"], to, family.root, creds=f"{USER}:{WRONG_PASSWORD}")
    assert "access denied with the given credentials" in str(wrong.value)
    for error in (anonymous.value, wrong.value):
        _no_secret(f"{error} {error!r} {error.args!r}")
    assert _tags(basic, f"{prefix}/library/app") == []  # nothing tagged
    done = await _push(["app", "tools"], to, family.root, creds=f"{USER}:{PASSWORD}")
    assert [i.name for i in done.images][-1] == f"{to}/library/tools:latest"
    assert done.blobs_mounted == 1  # the base layer, into tools
    assert sorted(_tags(basic, f"{prefix}/library/app")) == ["1.0", "2.0", "latest"]


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_token_auth_push_with_push_scopes_and_mounts(
    family: Family, token_registry: Registry, tokens: TokenServer, prefix: str
) -> None:
    to = f"{token_registry.host}/{prefix}"
    with pytest.raises(RegistryError) as anonymous:
        await _push(["app:1.0"], to, family.root)
    assert anonymous.value.status == 401
    _no_secret(f"{anonymous.value} {anonymous.value!r}")
    before = tokens.requests
    done = await _push(["app:1.0", "tools"], to, family.root, creds=f"{USER}:{PASSWORD}")
    # A mount needs pull on the repository it comes from as well as push on its target: the
    # token server granted both, so the base layer was mounted, not uploaded twice.
    assert done.blobs_mounted == 1 and done.blobs_uploaded == 5
    # One token per repository, one more for the mount's pair of scopes: not one per request.
    assert tokens.requests - before <= 4
    again = await _push(["app:1.0", "tools"], to, family.root, creds=f"{USER}:{PASSWORD}")
    assert (again.blobs_uploaded, again.blobs_skipped) == (0, 6)


@pytest.mark.anyio
async def test_wrong_token_credentials_fail_cleanly(
    family: Family, token_registry: Registry, prefix: str
) -> None:
    with pytest.raises(RegistryError, match="rejected the credentials") as wrong:
        await _push(
            ["app:1.0"], f"{token_registry.host}/{prefix}", family.root,
            creds=f"{USER}:{WRONG_PASSWORD}",
        )  # fmt: skip
    _no_secret(f"{wrong.value} {wrong.value!r}")


# -- credential helpers and identity tokens --------------------------------------------------


def _install_helper(bin_dir: Path, name: str, username: str, secret: str, calls: Path) -> None:
    """A ``docker-credential-NAME`` program speaking the helper protocol: ``get`` reads the
    server on stdin, logs it, and prints the credentials as JSON."""
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "server = sys.stdin.read().strip()\n"
        f"with open({str(calls)!r}, 'a') as log:\n"
        "    log.write(' '.join(sys.argv[1:]) + ' ' + server + '\\n')\n"
        "if sys.argv[1:] != ['get']:\n"
        "    sys.exit(1)\n"
        f"print(json.dumps({{'ServerURL': server, 'Username': {username!r}, "
        f"'Secret': {secret!r}}}))\n"
    )
    helper.chmod(0o755)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``$DOCKER_CONFIG`` and a bin directory first on ``PATH``."""
    config = tmp_path / "docker"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return config


@pytest.mark.anyio
async def test_a_credential_helper_for_the_registry_is_used(
    family: Family, basic: Registry, docker_config: Path, tmp_path: Path, prefix: str
) -> None:
    calls = tmp_path / "calls.log"
    _install_helper(tmp_path / "bin", "hwtest", USER, PASSWORD, calls)
    (docker_config / "config.json").write_text(
        json.dumps({"credHelpers": {basic.host: "hwtest"}, "credsStore": "missing-one"})
    )
    done = await _push(
        ["app:1.0", "tools"], f"{basic.host}/{prefix}", family.root, use_credential_files=True
    )
    assert len(done.images) == 2
    assert calls.read_text() == f"get {basic.host}\n"  # once per run, not per repository


@pytest.mark.anyio
async def test_a_missing_helper_is_named_in_the_error(
    family: Family, basic: Registry, docker_config: Path, prefix: str
) -> None:
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "not-installed"}))
    with pytest.raises(RegistryError) as info:
        await _push(["app:1.0"], f"{basic.host}/{prefix}", family.root, use_credential_files=True)
    assert "credential helper docker-credential-not-installed is not on PATH" in str(info.value)


@pytest.mark.anyio
async def test_an_identity_token_from_a_helper_is_exchanged_at_the_token_server(
    family: Family,
    token_registry: Registry,
    tokens: TokenServer,
    basic: Registry,
    docker_config: Path,
    tmp_path: Path,
    prefix: str,
) -> None:
    _install_helper(tmp_path / "bin", "idtoken", "<token>", REFRESH_TOKEN, tmp_path / "c.log")
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "idtoken"}))
    posts = tokens.posts
    done = await _push(
        ["app:1.0"], f"{token_registry.host}/{prefix}", family.root, use_credential_files=True
    )
    assert done.images[0].id == family.images["app1"].config_digest
    assert tokens.posts > posts  # the refresh_token grant, not Basic credentials
    # A Basic-auth registry has no token server to exchange it at: refused, clearly.
    with pytest.raises(RegistryError, match="identity token") as info:
        await _push(["app:1.0"], f"{basic.host}/{prefix}", family.root, use_credential_files=True)
    _no_secret(f"{info.value} {info.value!r}")


# -- the command line ------------------------------------------------------------------------


def test_the_cli_keeps_secrets_out_of_its_output(
    family: Family, basic: Registry, tmp_path: Path, prefix: str
) -> None:
    to = f"{basic.host}/{prefix}"
    env = {"DOCKER_CONFIG": str(tmp_path), "REGISTRY_AUTH_FILE": str(tmp_path / "none.json")}
    store = ["--store", str(family.root)]
    wrong = run(
        "push", *store, "--creds", f"{USER}:{WRONG_PASSWORD}", "--to", to, "app:1.0", env=env
    )
    assert wrong.returncode == 1
    assert "401" in error_line(wrong)
    right = run("push", *store, "--creds", f"{USER}:{PASSWORD}", "--to", to, "app:1.0", env=env)
    assert right.returncode == 0, right.stderr
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {basic.host: {"auth": auth}}}))
    from_file = run("push", *store, "--to", to, "tools", env=env)
    assert from_file.returncode == 0, from_file.stderr
    for result in (wrong, right, from_file):
        _no_secret(result.stdout.decode() + result.stderr.decode())
