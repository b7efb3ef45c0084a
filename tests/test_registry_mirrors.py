"""registries.conf: parsing and endpoint choice (pure), then mirrors against real registries on
loopback — ``docker://busybox`` saved from a mirror with nothing else reachable, a failing
mirror falling through, a blocked name refused — and the names recorded stay the names given.

Docker Hub is never contacted: every docker.io name here either hits a loopback mirror first,
is blocked, or has its primary location rewritten to a closed loopback port.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hatchway import ConfigError, NoSuchImage, RegistryError, RegistryOptions, RetryPolicy, pull
from hatchway.reference import parse_reference
from hatchway.transports.registry.mirrors import (
    Endpoint,
    RegistriesConf,
    load_registries_conf,
    parse_registries_conf,
    registries_conf_path,
)
from tests.peers import Registry, free_port, start_registry
from tests.registry_support import Lab, Sleeps, push_image, save_from_registry
from tests.support import read_archive
from tests.tls_support import TlsLab

DIGEST = "sha256:" + "ab" * 32


def _conf(text: str) -> RegistriesConf:
    return parse_registries_conf(text.encode(), "/test/registries.conf")


def _where(conf: RegistriesConf, name: str) -> list[tuple[str, bool, bool]]:
    """Each endpoint as (name there, insecure, mirror)."""
    ref = parse_reference(name, registry=True)
    return [(str(e.reference), e.insecure, e.mirror) for e in conf.pull_endpoints(ref)]


# -- pure: choosing endpoints ------------------------------------------------------------


def test_mirrors_come_first_then_the_primary_and_docker_hub_names_are_spelt_out() -> None:
    conf = _conf(
        """
        unqualified-search-registries = ["quay.io"]  # never used: short names are Docker Hub
        [[registry]]
        prefix = "docker.io"
        location = "docker.io"
        [[registry.mirror]]
        location = "mirror-a.corp:5000"
        [[registry.mirror]]
        location = "mirror-b.corp/hub"
        insecure = true
        """
    )
    assert _where(conf, "busybox") == [
        ("docker://mirror-a.corp:5000/library/busybox:latest", False, True),
        ("docker://mirror-b.corp/hub/library/busybox:latest", True, True),
        ("docker://docker.io/library/busybox:latest", False, False),
    ]
    assert _where(conf, "quay.io/x/y:1") == [("docker://quay.io/x/y:1", False, False)]


def test_location_rewrites_the_matched_part_and_the_longest_prefix_wins() -> None:
    conf = _conf(
        """
        [[registry]]
        prefix = "example.com/foo"
        location = "internal.corp/bar"
        [[registry]]
        prefix = "example.com/foo/special"
        location = "special.corp"
        blocked = false
        [[registry]]
        location = "example.com"
        insecure = true
        """
    )
    assert _where(conf, "example.com/foo/app:2") == [
        ("docker://internal.corp/bar/app:2", False, False)
    ]
    assert _where(conf, "example.com/foo/special/x") == [
        ("docker://special.corp/x:latest", False, False)
    ]
    assert _where(conf, "example.com/other@" + DIGEST) == [
        (f"docker://example.com/other@{DIGEST}", True, False)
    ]


@pytest.mark.parametrize(
    ("prefix", "name", "matches"),
    [
        ("example.com", "example.com/a", True),
        ("example.com", "example.com:5000/a", False),  # another port is another registry
        ("example.com", "example.com.evil/a", False),
        ("reg.corp/team", "reg.corp/team/app", True),
        ("reg.corp/team", "reg.corp/teamx/app", False),
        ("reg.corp/team/app", "reg.corp/team/app:1", True),
        ("reg.corp/team/app", "reg.corp/team/app@" + DIGEST, True),
        ("reg.corp/team/app:1", "reg.corp/team/app:1", True),
        ("reg.corp/team/app:1", "reg.corp/team/app:10", False),
        ("*.corp", "a.b.corp/app", True),
        ("*.corp", "a.corp:5000/app", True),
        ("*.corp", "corp.io/app", False),
        ("docker.io/library", "busybox", True),
        ("docker.io/library", "someone/busybox", False),
    ],
)
def test_prefix_matching(prefix: str, name: str, matches: bool) -> None:
    conf = _conf(f'[[registry]]\nprefix = "{prefix}"\nblocked = true\n')
    ref = parse_reference(name, registry=True)
    if matches:
        with pytest.raises(RegistryError, match=r"is blocked by /test/registries\.conf"):
            conf.pull_endpoints(ref)
    else:
        assert conf.pull_endpoints(ref) == (Endpoint(ref),)


def test_pull_from_mirror_and_mirror_by_digest_only() -> None:
    conf = _conf(
        """
        [[registry]]
        location = "a.corp"
        [[registry.mirror]]
        location = "digests.corp"
        pull-from-mirror = "digest-only"
        [[registry.mirror]]
        location = "tags.corp"
        pull-from-mirror = "tag-only"
        [[registry.mirror]]
        location = "all.corp"
        pull-from-mirror = "all"

        [[registry]]
        location = "b.corp"
        mirror-by-digest-only = true
        [[registry.mirror]]
        location = "m.corp"
        """
    )
    hosts = [e.host for e in conf.pull_endpoints(parse_reference("a.corp/x:1"))]
    assert hosts == ["tags.corp", "all.corp", "a.corp"]
    hosts = [e.host for e in conf.pull_endpoints(parse_reference(f"a.corp/x@{DIGEST}"))]
    assert hosts == ["digests.corp", "all.corp", "a.corp"]
    assert [e.host for e in conf.pull_endpoints(parse_reference("b.corp/x"))] == ["b.corp"]
    hosts = [e.host for e in conf.pull_endpoints(parse_reference(f"b.corp/x@{DIGEST}"))]
    assert hosts == ["m.corp", "b.corp"]


def test_a_wildcard_prefix_applies_settings_and_mirrors_without_rewriting() -> None:
    conf = _conf(
        """
        [[registry]]
        prefix = "*.lab.corp"
        insecure = true
        [[registry.mirror]]
        location = "cache.corp/labs"
        """
    )
    assert _where(conf, "build.lab.corp/app:1") == [
        ("docker://cache.corp/labs/app:1", False, True),
        ("docker://build.lab.corp/app:1", True, False),
    ]


def test_push_never_goes_to_a_mirror_or_a_rewritten_location() -> None:
    conf = _conf(
        """
        [[registry]]
        prefix = "docker.io"
        location = "rewritten.corp"
        insecure = true
        [[registry.mirror]]
        location = "mirror.corp"
        """
    )
    ref = parse_reference("docker.io/me/app:1", registry=True)
    assert conf.push_endpoint(ref) == Endpoint(ref, insecure=True, mirror=False)
    other = parse_reference("quay.io/me/app:1", registry=True)
    assert conf.push_endpoint(other) == Endpoint(other)
    opts = RegistryOptions()
    assert conf.push_endpoint(ref).client_options(opts).insecure_registries == {"docker.io"}
    assert conf.push_endpoint(other).client_options(opts) is opts


def test_version_1_insecure_and_block_lists_are_honoured() -> None:
    conf = _conf(
        """
        [registries.search]
        registries = ["quay.io"]
        [registries.insecure]
        registries = ["old.corp:5000"]
        [registries.block]
        registries = ["bad.corp"]
        """
    )
    assert _where(conf, "old.corp:5000/a") == [("docker://old.corp:5000/a:latest", True, False)]
    with pytest.raises(RegistryError, match="blocked"):
        conf.pull_endpoints(parse_reference("bad.corp/a"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[registry]\n", "not valid TOML"),
        ('[[registry]]\nlocation = "https://reg.corp"\n', "no scheme allowed"),
        ('[[registry]]\nlocation = "justaname"\n', "does not start with a registry host"),
        ("[[registry]]\ninsecure = true\n", "neither prefix nor location is set"),
        ('[[registry]]\nlocation = "a.corp"\ninsecure = "yes"\n', "insecure must be true or"),
        ('[[registry]]\nprefix = "*.corp"\nlocation = "a.corp"\n', "wildcard prefix cannot"),
        ('[[registry]]\nlocation = "a.corp"\npull-from-mirror = "all"\n', "belongs in"),
        (
            '[[registry]]\nlocation = "a.corp"\n[[registry.mirror]]\nlocation = "m.corp"\n'
            'pull-from-mirror = "sometimes"\n',
            "is not one of all, digest-only, tag-only",
        ),
        (
            '[[registry]]\nlocation = "a.corp"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m.corp"\npull-from-mirror = "all"\n',
            "cannot be combined",
        ),
        ('[[registry]]\nlocation = "a.corp"\n[[registry.mirror]]\ninsecure = true\n', "without"),
        ('[[registry]]\nlocation = "a.corp"\n[[registry]]\nprefix = "a.corp"\n', "more than once"),
        (
            '[registries.block]\nregistries = ["x.corp"]\n[[registry]]\nlocation = "a.corp"\n',
            "mixes",
        ),
        ('[[registry]]\nlocation = "a.corp/Upper"\n', "must be lowercase"),
    ],
)
def test_a_broken_registries_conf_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _conf(text)
    assert str(info.value).startswith("/test/registries.conf: ")
    assert "\n" not in str(info.value)


# -- pure: where the file comes from -----------------------------------------------------


def test_the_file_is_found_as_the_containers_tools_find_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    user = home / ".config" / "containers" / "registries.conf"
    env = {"HOME": str(home)}
    system = "/etc/containers/registries.conf"
    expected_default = (system, False) if Path(system).exists() else (None, False)
    assert registries_conf_path(RegistryOptions(), env) == expected_default
    user.parent.mkdir(parents=True)
    user.write_text('[[registry]]\nlocation = "user.corp"\nblocked = true\n')
    assert registries_conf_path(RegistryOptions(), env) == (str(user), False)
    env["CONTAINERS_REGISTRIES_CONF"] = str(tmp_path / "env.conf")
    assert registries_conf_path(RegistryOptions(), env) == (str(tmp_path / "env.conf"), True)
    explicit = RegistryOptions(registries_conf=str(tmp_path / "explicit.conf"))
    assert registries_conf_path(explicit, env) == (str(tmp_path / "explicit.conf"), True)
    with pytest.raises(ConfigError, match=r"env\.conf: no such file"):
        load_registries_conf(RegistryOptions(), env)
    del env["CONTAINERS_REGISTRIES_CONF"]
    assert load_registries_conf(RegistryOptions(), env).entries[0].location == "user.corp"
    assert load_registries_conf(RegistryOptions(use_registries_conf=False), env).entries == ()


# -- real registries ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_mirror(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A registry holding the lab's hw/docker:1 image as library/busybox:latest (what a
    Docker Hub mirror would hold) and an empty one (a mirror without the image)."""
    mirror = start_registry(tmp_path_factory.mktemp("hub-mirror"))
    empty = start_registry(tmp_path_factory.mktemp("empty-mirror"))
    image = lab.images.images["hw/docker:1"]
    push_image(mirror.url, "library/busybox", "latest", lab.images.layout, image)
    try:
        yield mirror, empty, image
    finally:
        mirror.stop()
        empty.stop()


def _write_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.conf"
    path.write_text(text)
    return path


def _opts(conf: Path, sleeps: Sleeps | None = None, **kw: Any) -> RegistryOptions:
    return RegistryOptions(
        registries_conf=str(conf),
        use_credential_files=False,
        certs_dirs=(),
        retry=RetryPolicy(sleep=sleeps or Sleeps()),
        **kw,
    )


def _hub(*mirrors: str, location: str = "docker.io", extra: str = "") -> str:
    text = f'[[registry]]\nprefix = "docker.io"\nlocation = "{location}"\n{extra}'
    for mirror in mirrors:
        text += f'[[registry.mirror]]\nlocation = "{mirror}"\n'
    return text


def _repo_tags(raw: bytes) -> list[list[str] | None]:
    return [e["RepoTags"] for e in read_archive(raw).json("manifest.json")]


@pytest.mark.anyio
@pytest.mark.peers
async def test_busybox_is_saved_from_the_mirror_under_the_name_given(
    hub_mirror: tuple[Registry, Registry, Any], tmp_path: Path
) -> None:
    mirror, _, image = hub_mirror
    sleeps = Sleeps()
    opts = _opts(_write_conf(tmp_path, _hub(mirror.host)), sleeps)
    raw = await save_from_registry(["docker://busybox"], tmp_path / "a.tar", opts)
    assert _repo_tags(raw) == [["busybox:latest"]]
    by_digest = await save_from_registry(
        [f"docker://busybox@{image.digest}"], tmp_path / "d.tar", opts
    )
    assert _repo_tags(by_digest) == [None]  # a digest records no tag
    assert sleeps.delays == []


@pytest.mark.anyio
@pytest.mark.peers
async def test_a_failing_mirror_falls_through_to_the_next(
    hub_mirror: tuple[Registry, Registry, Any], tmp_path: Path
) -> None:
    mirror, empty, _ = hub_mirror
    closed = f"127.0.0.1:{free_port()}"
    sleeps = Sleeps()
    opts = _opts(_write_conf(tmp_path, _hub(closed, empty.host, mirror.host)), sleeps)
    raw = await save_from_registry(["docker://library/busybox:latest"], tmp_path / "a.tar", opts)
    assert _repo_tags(raw) == [["busybox:latest"]]
    assert sleeps.delays == []  # a refused mirror is not retried


@pytest.mark.anyio
@pytest.mark.peers
async def test_when_every_endpoint_fails_the_primary_error_names_the_mirrors(
    hub_mirror: tuple[Registry, Registry, Any], tmp_path: Path
) -> None:
    _, empty, _ = hub_mirror
    closed, primary = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    opts = _opts(_write_conf(tmp_path, _hub(closed, empty.host, location=primary)))
    with pytest.raises(RegistryError) as info:
        await save_from_registry(["docker://busybox"], tmp_path / "a.tar", opts)
    assert str(info.value) == (
        f"registry {primary}, repository library/busybox: manifest latest: cannot connect: "
        f"connection refused (is the registry running?) (mirrors also failed: {closed}: "
        f"manifest latest: cannot connect: connection refused (is the registry running?); "
        f"{empty.host}: no such image)"
    )
    assert not (tmp_path / "a.tar").exists()


@pytest.mark.anyio
@pytest.mark.peers
async def test_no_such_image_anywhere_says_what_the_mirrors_said(
    hub_mirror: tuple[Registry, Registry, Any], lab: Lab, tmp_path: Path
) -> None:
    _, empty, _ = hub_mirror
    conf = _write_conf(tmp_path, _hub(empty.host, location=f"{lab.registry.host}/nothing-here"))
    with pytest.raises(NoSuchImage) as info:
        await save_from_registry(["docker://busybox:9"], tmp_path / "a.tar", _opts(conf))
    assert str(info.value) == (
        f"No such image: docker://busybox:9 (mirrors also failed: {empty.host}: no such image)"
    )


@pytest.mark.anyio
@pytest.mark.peers
async def test_a_blocked_name_is_refused_even_with_a_working_mirror(
    hub_mirror: tuple[Registry, Registry, Any], tmp_path: Path
) -> None:
    mirror, _, _ = hub_mirror
    conf = _write_conf(tmp_path, _hub(mirror.host, extra="blocked = true\n"))
    with pytest.raises(RegistryError) as info:
        await save_from_registry(["docker://busybox"], tmp_path / "a.tar", _opts(conf))
    assert str(info.value) == (
        "registry docker.io, repository library/busybox: docker.io/library/busybox:latest "
        f"is blocked by {conf} (prefix 'docker.io')"
    )


@pytest.mark.anyio
@pytest.mark.peers
async def test_a_location_rewrite_reads_elsewhere_and_records_the_name_given(
    lab: Lab, tmp_path: Path
) -> None:
    conf = _write_conf(
        tmp_path,
        f'[[registry]]\nprefix = "apps.example/team"\nlocation = "{lab.registry.host}/hw"\n',
    )
    raw = await save_from_registry(
        ["docker://apps.example/team/docker:1"], tmp_path / "a.tar", _opts(conf)
    )
    assert _repo_tags(raw) == [["apps.example/team/docker:1"]]


@pytest.mark.anyio
@pytest.mark.peers
async def test_an_insecure_mirror_skips_tls_verification(tls_lab: TlsLab, tmp_path: Path) -> None:
    mirror = tls_lab.self_signed.host
    conf = _write_conf(
        tmp_path,
        '[[registry]]\nprefix = "apps.example"\nlocation = "apps.example"\n'
        f'[[registry.mirror]]\nlocation = "{mirror}/hw"\ninsecure = true\n',
    )
    raw = await save_from_registry(["docker://apps.example/oci:1"], tmp_path / "a.tar", _opts(conf))
    assert _repo_tags(raw) == [["apps.example/oci:1"]]


@pytest.mark.anyio
@pytest.mark.peers
async def test_pull_through_a_mirror_stores_the_name_given(
    hub_mirror: tuple[Registry, Registry, Any], tmp_path: Path
) -> None:
    mirror, _, _ = hub_mirror
    opts = _opts(_write_conf(tmp_path, _hub(mirror.host)))
    result = await pull(["busybox"], store=tmp_path / "store", registry=opts)
    assert [i.name for i in result.images] == ["docker.io/library/busybox:latest"]
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == ["docker.io/library/busybox:latest"]
