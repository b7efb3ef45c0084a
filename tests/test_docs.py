"""The documented examples and the sample store run as the docs say they do."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import read_archive

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("sample") / "store"
    subprocess.run(
        [sys.executable, ROOT / "scripts" / "make_sample_store.py", store],
        check=True,
        capture_output=True,
    )
    return store


def test_sample_store_is_deterministic(sample_store: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    subprocess.run(
        [sys.executable, ROOT / "scripts" / "make_sample_store.py", again],
        check=True,
        capture_output=True,
    )
    assert (again / "index.json").read_bytes() == (sample_store / "index.json").read_bytes()


def test_asyncio_example(sample_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    result = subprocess.run(
        [sys.executable, ROOT / "docs" / "examples" / "save_asyncio.py", sample_store, out],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sample/app:1.0" in result.stdout and "sample/tools:latest" in result.stdout
    tags = [e["RepoTags"] for e in read_archive(out.read_bytes()).json("manifest.json")]
    assert tags == [
        ["sample/app:1.0"],
        ["sample/app:2.0", "sample/app:latest"],
        ["sample/tools:latest"],
    ]


def test_trio_stream_example(sample_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar.gz"
    subprocess.run(
        [sys.executable, ROOT / "docs" / "examples" / "stream_trio.py", sample_store, out],
        capture_output=True,
        text=True,
        check=True,
    )
    archive = read_archive(gzip.decompress(out.read_bytes()))
    assert archive.json("manifest.json")[0]["RepoTags"] == ["sample/app:2.0"]


def _make_sample(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, ROOT / "scripts" / "make_sample_store.py", target],
        capture_output=True,
        text=True,
    )


def test_sample_store_script_never_deletes_what_it_did_not_make(tmp_path: Path) -> None:
    """A mistyped DIR that holds someone's files is refused, untouched; a sample store the
    script made before is replaced."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    refused = _make_sample(precious)
    assert refused.returncode == 1 and "not a sample store" in refused.stderr
    assert (precious / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no leftovers
    ours = tmp_path / "store"
    assert _make_sample(ours).returncode == 0
    (ours / "stale").write_text("from an older run")
    assert _make_sample(ours).returncode == 0
    assert not (ours / "stale").exists() and (ours / "index.json").is_file()


def test_sample_store_script_explains_its_arguments() -> None:
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "make_sample_store.py", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "DIR" in result.stdout
    bad = subprocess.run(
        [sys.executable, ROOT / "scripts" / "make_sample_store.py", "a", "b"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def _walkthrough(doc: str, heading: str) -> tuple[str, list[str]]:
    """The registry config and the ``hatchway`` command lines of a walk-through section."""
    section = doc.split(heading, 1)[1]
    block = section.split("```", 2)[1]
    config = block.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    commands = [ln.strip() for ln in block.splitlines() if ln.startswith("hatchway ")]
    return config, commands


@pytest.mark.peers
def test_push_walkthrough_runs_as_written(sample_store: Path, tmp_path: Path) -> None:
    """docs/registry.md: start a registry with the config shown, push the sample store into
    it twice (the second uploads nothing), save a pushed image back."""
    import shlex
    import urllib.request

    from tests.peers import ManagedProcess, free_port, require_binary, wait_until_ready
    from tests.test_cli import run

    doc = (ROOT / "docs" / "registry.md").read_text()
    config, commands = _walkthrough(doc, "### Push the sample store into a local registry")
    assert len(commands) == 3
    host = f"127.0.0.1:{free_port()}"
    config = config.replace("127.0.0.1:5000", host).replace("/tmp/registry-data", str(tmp_path))
    (tmp_path / "registry.yml").write_text(config)
    registry = ManagedProcess(
        "docker-registry",
        [require_binary("docker-registry"), "serve", tmp_path / "registry.yml"],
        tmp_path / "registry.log",
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    try:
        wait_until_ready(registry, ready, what="answer on /v2/")
        results = []
        for line in commands:
            argv = shlex.split(line.replace("127.0.0.1:5000", host))[1:]
            argv = [str(sample_store) if a == "sample/store" else a for a in argv]
            results.append(run(*argv, cwd=tmp_path))
        for result in results:
            assert result.returncode == 0, result.stderr
        first, second, _ = (r.stderr.decode() for r in results)
        assert "1 mounted" in first and "0 blob(s) uploaded" in second
        pushed = [ln.split()[0] for ln in results[0].stdout.decode().splitlines()]
        assert pushed == [
            f"{host}/mirror/sample/app:1.0",
            f"{host}/mirror/sample/app:2.0",
            f"{host}/mirror/sample/app:latest",
            f"{host}/mirror/sample/tools:latest",
        ]
        tags = read_archive((tmp_path / "pushed.tar").read_bytes()).json("manifest.json")
        assert tags[0]["RepoTags"] == [f"{host}/mirror/sample/app:2.0"]
    finally:
        registry.stop()


def test_bundles_walk_through(sample_store: Path, tmp_path: Path) -> None:
    """The sample walk-through of docs/bundles.md, command by command, as written there."""
    text = (ROOT / "docs" / "bundles.md").read_text()
    block = text.split("runs them as written here (`tests/test_docs.py`):\n\n```\n", 1)[1]
    commands = block.split("```", 1)[0].strip().splitlines()
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "store").symlink_to(sample_store)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        result = subprocess.run(
            command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout)
    assert "OK: 2 image(s), 2 tag(s)" in outputs[2]
    assert "sample/app" in outputs[4] and "sample/tools" in outputs[4]
