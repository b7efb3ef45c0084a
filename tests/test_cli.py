"""The command line, run as a user runs it: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

import hatchway
from tests.support import Family, files_under, fresh_interpreter, read_archive

HATCHWAY = [sys.executable, "-m", "hatchway"]


def run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*HATCHWAY, *args],
        capture_output=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    return lines[0]


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"hatchway, version {hatchway.__version__}"


def test_save_to_file_and_to_stdout_are_identical(family: Family, tmp_path: Path) -> None:
    result = run("save", "--store", str(family.root), "-o", str(tmp_path / "o.tar"), "app", "tools")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    piped = run("save", "--store", str(family.root), "app", "tools")
    assert piped.returncode == 0
    assert piped.stdout == (tmp_path / "o.tar").read_bytes()
    dash = run("save", "--store", str(family.root), "-o", "-", "app", "tools")
    assert dash.stdout == piped.stdout


def test_store_from_environment(family: Family, tmp_path: Path) -> None:
    result = run(
        "save", "-o", str(tmp_path / "o.tar"), "app:1.0", env={"HATCHWAY_STORE": str(family.root)}
    )
    assert result.returncode == 0, result.stderr
    xdg = tmp_path / "xdg"
    (xdg / "hatchway").mkdir(parents=True)
    family.root.rename(xdg / "hatchway" / "store")
    env = {"HATCHWAY_STORE": "", "XDG_DATA_HOME": str(xdg)}
    result = run("save", "-o", str(tmp_path / "p.tar"), "app:1.0", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o.tar").read_bytes() == (tmp_path / "p.tar").read_bytes()


def test_missing_image(family: Family, tmp_path: Path) -> None:
    result = run(
        "save", "--store", str(family.root), "-o", str(tmp_path / "o.tar"), "app", "nope:1"
    )
    assert result.returncode == 1
    assert error_line(result) == "hatchway: error: No such image: nope:1"
    assert not (tmp_path / "o.tar").exists()
    piped = run("save", "--store", str(family.root), "nope:1")
    assert piped.returncode == 1
    assert piped.stdout == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "/nonexistent/store", "app"], "no such directory"),
        (["-o", "/nonexistent/dir/o.tar", "app"], "directory /nonexistent/dir does not exist"),
    ],
)
def test_errors_are_one_line(family: Family, args: list[str], message: str) -> None:
    if "--store" not in args:
        args = ["--store", str(family.root), *args]
    result = run("save", *args)
    assert result.returncode == 1
    assert message in error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no image name given"),
        (["--format", "zip", "app"], "'zip' is not one of"),
        (["--platform", "linux", "app"], "is not os/arch"),
        (["-j", "0", "app"], "0 is not in the range"),
        (["--no-such-flag", "app"], "No such option"),
        # Found by the library, once the operation started: usage errors all the same.
        (["BAD"], "'NAME...': invalid reference format: 'BAD': repository name must be lowercase"),
        (["--compress", "gzip", "--compress-level", "9", "app"], "gzip levels are 0-3, not 9"),
        (["--compress-level", "3", "app"], "'--compress-level': a compression level needs a"),
        (["--ca-cert", "/dev/null", "app"], "'--ca-cert': '/dev/null' is not a regular file"),
    ],
)
def test_usage_errors_exit_2(family: Family, args: list[str], message: str) -> None:
    result = run("save", "--store", str(family.root), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr.decode()
    assert "Usage:" in result.stderr.decode()
    assert message in result.stderr.decode()
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("127.0.0.1:1/app@sha256:" + "0" * 64, "names a repository or a tag, not a digest"),
        ("127.0.0.1:1/app:1", "names one image, but the names given are 2 images"),
        ("docker://", "a push destination is HOST[:PORT][/PREFIX]"),
    ],
)
def test_push_destination_errors_are_usage_errors(family: Family, to: str, message: str) -> None:
    """``--to`` is checked by the library (``app`` is two images, 1.0 and 2.0 = latest:
    only resolving the name tells)."""
    result = run("push", "--store", str(family.root), "--to", to, "app")
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--to'" in result.stderr.decode()
    assert message in result.stderr.decode()


def test_refuses_to_write_to_a_terminal(family: Family, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [*HATCHWAY, "save", "--store", str(family.root), "app"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 1
    assert "refusing to write an archive to a terminal" in error_line(result)


def test_images_table_and_json(family: Family) -> None:
    table = run("images", "--store", str(family.root))
    assert table.returncode == 0
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = [line.split()[:3] for line in lines[1:]]
    app2 = family.images["app2"].config_digest[7:19]
    assert ["app", "2.0", app2] in rows and ["app", "latest", app2] in rows
    assert ["busybox", "latest", family.images["busybox"].config_digest[7:19]] in rows
    assert ["<none>", "<none>", family.images["orphan"].config_digest[7:19]] in rows
    listed = json.loads(run("images", "--store", str(family.root), "--json").stdout)
    by_name = {row["name"]: row for row in listed}
    assert by_name["tools:latest"]["id"] == family.images["tools"].config_digest
    assert by_name["tools:latest"]["annotation"] == "tools:latest"
    assert by_name["multi:latest"]["platform"].startswith("linux/")
    assert by_name[None]["annotation"] == "orphan"


def test_formats_and_platform_flags(family: Family, tmp_path: Path) -> None:
    for fmt in ("docker", "docker-1.10", "docker-legacy"):
        out = tmp_path / f"{fmt}.tar"
        result = run(
            "save",
            "--store",
            str(family.root),
            "--format",
            fmt,
            "--platform",
            "linux/arm64",
            "-j",
            "3",
            "-q",
            "-o",
            str(out),
            "multi",
        )
        assert result.returncode == 0, result.stderr
        names = read_archive(out.read_bytes()).names
        assert ("manifest.json" in names) == (fmt != "docker-legacy")
        assert ("oci-layout" in names) == (fmt == "docker")
    assert sorted(files_under(tmp_path)) == sorted(
        ["docker.tar", "docker-1.10.tar", "docker-legacy.tar"]
        + [p for p in files_under(tmp_path) if p.startswith("store")]
    )


def test_help_teaches() -> None:
    text = run("save", "--help").stdout.decode()
    for word in ("repo:tag", "repo@sha256", "--format", "--platform", "--jobs", "terminal"):
        assert word in text


def test_progress_and_summary_on_a_terminal_stderr(family: Family, tmp_path: Path) -> None:
    """With stderr on a terminal, bars are drawn there and a summary line ends the run;
    ``-q`` silences both."""
    outputs = {}
    for quiet in (False, True):
        controller, terminal = pty.openpty()
        try:
            proc = subprocess.Popen(
                [
                    *HATCHWAY,
                    "save",
                    "--store",
                    str(family.root),
                    "-o",
                    str(tmp_path / "o.tar"),
                    *(["-q"] if quiet else []),
                    "app",
                    "tools",
                ],
                stdout=subprocess.DEVNULL,
                stderr=terminal,
            )
            os.close(terminal)
            chunks = []
            while True:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            assert proc.wait(timeout=60) == 0
        finally:
            os.close(controller)
        outputs[quiet] = b"".join(chunks).decode(errors="replace")
    assert "saved 3 image(s), 4 tag(s), 4 layer(s)" in outputs[False]
    assert "staging 4 layers" in outputs[False]
    assert outputs[True] == ""


# -- the last-resort guard -----------------------------------------------------------------

#: Runs the real CLI with a fault planted where the archive is planned (after every layer is
#: staged, so there is something to clean up): ``python -c DRIVER EXCEPTION ARGS...``.
PLANTED_FAULT = """
import sys
import click
import hatchway
import _hatchway_cli
import hatchway.transports.archive.destination as destination

fault = eval(sys.argv[1])

def planted(*args, **kwargs):
    raise fault

destination.ArchiveDestination.plan = planted
sys.argv = ["hatchway", *sys.argv[2:]]
_hatchway_cli.main()
"""


def run_planted(
    fault: str, family: Family, out: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    out.mkdir(exist_ok=True)
    args = ["save", "-q", "--store", str(family.root), "-o", str(out / "o.tar"), "app:1.0"]
    return subprocess.run(
        [sys.executable, "-c", PLANTED_FAULT, fault, *args],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_an_unexpected_error_is_one_line_after_cleanup(family: Family, tmp_path: Path) -> None:
    result = run_planted("ValueError('planted')", family, tmp_path / "out")
    assert result.returncode == 1
    assert error_line(result) == (
        "hatchway: error: internal error: ValueError('planted'); this is a bug in hatchway, "
        "please report it (HATCHWAY_DEBUG=1 shows the traceback)"
    )
    assert files_under(tmp_path / "out") == []  # the staging directory is gone too


def test_hatchway_debug_shows_the_traceback(family: Family, tmp_path: Path) -> None:
    result = run_planted(
        "RecursionError('planted')", family, tmp_path / "out", {"HATCHWAY_DEBUG": "1"}
    )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Traceback" in stderr and "RecursionError: planted" in stderr
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("fault", "status", "expected"),
    [
        # hatchway's own errors keep their message
        ("hatchway.DigestMismatch('layer', 'sha256:a', 'sha256:b')", 1,
         "hatchway: error: layer: digest mismatch: expected sha256:a, got sha256:b"),
        # OSError keeps its one line
        ("PermissionError(13, 'Permission denied', '/x')", 1,
         "hatchway: error: Permission denied: /x"),
        # Ctrl-C that surfaces as KeyboardInterrupt is still an interruption
        ("KeyboardInterrupt()", 130, "hatchway: interrupted"),
        # an exit asked for keeps its status; click's usage errors still exit 2
        ("SystemExit(3)", 3, None),
        ("click.BadParameter('planted', param_hint='--x')", 2,
         "Error: Invalid value for --x: planted"),
    ],
)  # fmt: skip
def test_the_guard_hides_no_error_class(
    family: Family, tmp_path: Path, fault: str, status: int, expected: str | None
) -> None:
    result = run_planted(fault, family, tmp_path / "out")
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    if expected is not None:
        assert stderr.strip().splitlines()[-1] == expected
    assert files_under(tmp_path / "out") == []


def test_the_command_does_not_import_httpx_own_command_line_tool() -> None:
    """httpx imports its command-line tool (rich, pygments: ~50 ms) whenever it is imported;
    the ``hatchway`` command stops that, and a registry client still works without it."""
    code = (
        "import sys, hatchway.cli, hatchway.transports.registry.client as c, httpx\n"
        "c.RegistryClient('example.test', __import__('hatchway').RegistryOptions())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'pygments')))\n"
        "print(callable(httpx.main))\n"
    )
    assert fresh_interpreter(code) == ["[]", "True"]
