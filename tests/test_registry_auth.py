"""Registry authentication against real registries: htpasswd Basic auth and token auth with
our own JWT-signing token server.  Right credentials work; wrong ones fail clearly, and no
secret ever shows in an error."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hatchway import Selection
from hatchway.errors import RegistryError
from hatchway.reference import parse_query
from hatchway.transports.registry.source import RegistryStore
from tests.registry_support import (
    PASSWORD,
    USER,
    WRONG_PASSWORD,
    Lab,
    options,
    save_from_registry,
)
from tests.support import read_archive

pytestmark = [pytest.mark.anyio, pytest.mark.peers]


def _name(host: str, repo_tag: str = "hw/docker:1") -> str:
    return f"docker://{host}/{repo_tag}"


def _assert_no_secret(error: BaseException) -> None:
    for text in (str(error), repr(error), repr(error.args)):
        assert PASSWORD not in text and WRONG_PASSWORD not in text
        assert "Bearer" not in text and "eyJ" not in text


# -- Basic (htpasswd, bcrypt) -----------------------------------------------------------


async def test_basic_auth_with_the_right_credentials(lab: Lab, tmp_path: Path) -> None:
    raw = await save_from_registry(
        [_name(lab.basic.host)], tmp_path / "a.tar", options(creds=f"{USER}:{PASSWORD}")
    )
    tags = read_archive(raw).json("manifest.json")[0]["RepoTags"]
    assert tags == [f"{lab.basic.host}/hw/docker:1"]


async def test_basic_auth_with_wrong_credentials_fails_clearly(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        await save_from_registry(
            [_name(lab.basic.host)], tmp_path / "a.tar", options(creds=f"{USER}:{WRONG_PASSWORD}")
        )
    error = info.value
    assert error.status == 401 and error.registry == lab.basic.host
    assert error.repository == "hw/docker" and error.code == "UNAUTHORIZED"
    assert "access denied with the given credentials" in str(error)
    _assert_no_secret(error)
    assert not (tmp_path / "a.tar").exists()


async def test_basic_auth_without_credentials_says_so(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="anonymously") as info:
        await save_from_registry([_name(lab.basic.host)], tmp_path / "a.tar", options())
    assert info.value.status == 401


async def test_credentials_from_docker_config(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {f"http://{lab.basic.host}/v2/": {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    opts = options(use_credential_files=True)
    raw = await save_from_registry([_name(lab.basic.host)], tmp_path / "a.tar", opts)
    assert read_archive(raw).json("manifest.json")


async def test_credentials_from_registry_auth_file_win_over_docker_config(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = base64.b64encode(f"{USER}:{WRONG_PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {lab.basic.host: {"auth": wrong}}}))
    (tmp_path / "auth.json").write_text(
        json.dumps({"auths": {f"{lab.basic.host}/hw": {"username": USER, "password": PASSWORD}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    opts = options(use_credential_files=True)
    raw = await save_from_registry([_name(lab.basic.host)], tmp_path / "a.tar", opts)
    assert read_archive(raw).json("manifest.json")


# -- Bearer tokens ----------------------------------------------------------------------


async def test_token_auth_with_the_right_credentials_fetches_one_token_per_repository(
    lab: Lab, tmp_path: Path
) -> None:
    host = lab.token_registry.host
    names = [_name(host, n) for n in ("hw/family-a:1", "hw/family-c:1", "hw/big:1")]
    store = RegistryStore(options(creds=f"{USER}:{PASSWORD}"))
    before = lab.tokens.requests
    try:
        for name in names:
            await store.resolve(parse_query(name), Selection())
        assert lab.tokens.requests == before + 3  # counted by the token server itself
    finally:
        await store.aclose()
    raw = await save_from_registry(names, tmp_path / "a.tar", options(creds=f"{USER}:{PASSWORD}"))
    assert len(read_archive(raw).json("manifest.json")) == 3


async def test_token_auth_with_wrong_credentials_fails_clearly(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        await save_from_registry(
            [_name(lab.token_registry.host)],
            tmp_path / "a.tar",
            options(creds=f"{USER}:{WRONG_PASSWORD}"),
        )
    error = info.value
    assert error.status == 401 and "rejected the credentials" in str(error)
    assert error.registry == lab.token_registry.host
    _assert_no_secret(error)
    assert not (tmp_path / "a.tar").exists()


async def test_token_auth_anonymously_is_denied_when_the_server_grants_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="access denied anonymously") as info:
        await save_from_registry([_name(lab.token_registry.host)], tmp_path / "a.tar", options())
    assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"


async def test_an_expired_or_revoked_token_is_refreshed_once(lab: Lab) -> None:
    host = lab.token_registry.host
    store = RegistryStore(options(creds=f"{USER}:{PASSWORD}"))
    try:
        await store.resolve(parse_query(_name(host, "hw/oci:1")), Selection())
        auth = store.client(host).auth
        before = lab.tokens.requests
        # Swap the cached token for one the registry rejects (a broken signature).
        for scope, token in list(auth._tokens.items()):
            auth._tokens[scope] = type(token)(token.value[:-8] + "AAAAAAAA", token.expires_at)
        digest = lab.images.images["hw/oci:1"].digest
        [image] = await store.resolve(parse_query(f"docker://{host}/hw/oci@{digest}"), Selection())
        assert image.manifest_digest == digest
        assert lab.tokens.requests == before + 1
    finally:
        await store.aclose()
