"""``--images-from FILE``: names from a list file or stdin, combined with arguments."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from hatchway.cli.names import parse_image_list
from tests.support import Family, read_archive
from tests.test_cli import HATCHWAY, run


def test_list_syntax() -> None:
    text = "app:1.0\n\n  # a comment\n\ttools  \n#busybox\r\nmulti:latest\r\n   \n"
    assert parse_image_list(text) == ["app:1.0", "tools", "multi:latest"]
    assert parse_image_list("\ufeffapp:1.0\r\n") == ["app:1.0"]  # a BOM, as Notepad writes


def test_a_list_that_never_ends_or_cannot_be_read_is_one_usage_error(
    family: Family, tmp_path: Path
) -> None:
    out = tmp_path / "o.tar"
    for source, expected in [
        ("/dev/zero", "longer than 4 Mi characters"),
        ("/proc/self/mem", "cannot read"),
    ]:
        result = run("save", "--store", str(family.root), "-o", str(out), "--images-from", source)
        stderr = result.stderr.decode()
        assert result.returncode == 2, stderr
        assert expected in stderr and "Traceback" not in stderr
    # An endless list on stdin (`yes app:1.0 | hatchway save --images-from -`).
    proc = subprocess.Popen(
        [*HATCHWAY, "save", "--store", str(family.root), "-o", str(out), "--images-from", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    lines = b"app:1.0\n" * 4096
    with proc:
        with contextlib.suppress(BrokenPipeError):
            while proc.poll() is None:
                proc.stdin.write(lines)
        endless = proc.stderr.read().decode()
    assert proc.returncode == 2
    assert "longer than" in endless
    assert not out.exists()


def _tags(path: Path) -> list[list[str] | None]:
    return [e["RepoTags"] for e in read_archive(path.read_bytes()).json("manifest.json")]


def test_save_from_a_list_equals_save_of_the_names(family: Family, tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# bundle\napp:1.0\n\n  tools:latest  \n")
    by_list = tmp_path / "list.tar"
    result = run(
        "save", "--store", str(family.root), "-o", str(by_list), "--images-from", str(listing)
    )
    assert result.returncode == 0, result.stderr
    by_args = tmp_path / "args.tar"
    run("save", "--store", str(family.root), "-o", str(by_args), "app:1.0", "tools:latest")
    assert by_list.read_bytes() == by_args.read_bytes()


def test_list_on_stdin_follows_the_arguments(family: Family, tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    result = subprocess.run(
        [*HATCHWAY, "save", "--store", str(family.root), "-o", str(out), "busybox",
         "--images-from", "-"],
        input=b"app:1.0\nbusybox\n",
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _tags(out) == [["busybox:latest"], ["app:1.0"]]


def test_two_lists(family: Family, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("app:1.0\n")
    (tmp_path / "b").write_text("tools\n")
    out = tmp_path / "o.tar"
    lists = ["--images-from", str(tmp_path / "a"), "--images-from", str(tmp_path / "b")]
    result = run("save", "--store", str(family.root), "-o", str(out), *lists)
    assert result.returncode == 0, result.stderr
    assert _tags(out) == [["app:1.0"], ["tools:latest"]]


def test_no_names_at_all_is_a_usage_error(family: Family, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    for args in ([], ["--images-from", str(empty)]):
        result = run("save", "--store", str(family.root), "-o", str(tmp_path / "o.tar"), *args)
        assert result.returncode == 2
        assert "no image name given" in result.stderr.decode()
    assert not (tmp_path / "o.tar").exists()
    result = run("pull", "--store", str(tmp_path / "s"), "--images-from", str(empty))
    assert result.returncode == 2
    assert not (tmp_path / "s").exists()


def test_a_bad_name_in_a_list_fails_like_an_argument(family: Family, tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("app:1.0\nnope:1\n")
    out = tmp_path / "o.tar"
    result = run("save", "--store", str(family.root), "-o", str(out), "--images-from", str(listing))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "hatchway: error: No such image: nope:1"
    assert not out.exists()


def test_a_missing_list_is_a_usage_error(family: Family, tmp_path: Path) -> None:
    result = run("save", "--store", str(family.root), "-o", str(tmp_path / "o.tar"),
                 "--images-from", str(tmp_path / "missing.txt"))  # fmt: skip
    assert result.returncode == 2
    assert "missing.txt" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_push_takes_lists_too(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    result = run("push", "--to", "127.0.0.1:9/x", "--images-from", str(empty))
    assert result.returncode == 2
    assert "no image name given" in result.stderr.decode()
    two = tmp_path / "two.txt"
    two.write_text("a:1\nb:2\n")
    result = run("push", "--to", "127.0.0.1:9/x:1", "--images-from", str(two))
    assert result.returncode == 2
    assert "2 names were given" in result.stderr.decode()


def test_help_mentions_the_option() -> None:
    for command in ("save", "pull", "push"):
        assert "--images-from" in run(command, "--help").stdout.decode()
