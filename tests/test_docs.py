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
