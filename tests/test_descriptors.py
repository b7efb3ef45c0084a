"""Paths that name an open descriptor — ``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``,
``/proc/<pid>/fd/N``, ``/dev/stderr`` and links to them — are written through the descriptor,
with stdout's rules: appended after ``>>``, into an unnamed file too, never to a terminal,
never replacing the file the descriptor shows."""

from __future__ import annotations

import os
import pty
import subprocess
import tempfile
from pathlib import Path

import pytest

import hatchway
from tests.support import Family, read_archive
from tests.test_cli import HATCHWAY, error_line

KEEP = b"KEEP"


def _save_with_stdout(
    family: Family, output: str, stdout: int, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*HATCHWAY, "save", "-q", "--store", str(family.root), "-o", output, "app:1.0"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        cwd=cwd,
    )


def _appended(path: Path) -> bytes:
    """The archive after the ``KEEP`` the file started with (which must still be there)."""
    raw = path.read_bytes()
    assert raw.startswith(KEEP), raw[:16]
    return raw[len(KEEP) :]


@pytest.mark.parametrize(
    "output", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "/proc/thread-self/fd/1", "link"]
)
def test_a_path_naming_stdout_appends_through_it(
    family: Family, tmp_path: Path, output: str
) -> None:
    """``-o /dev/stdout >> f`` appends to ``f`` as ``-o - >> f`` does (it replaced ``f``)."""
    (tmp_path / "link").symlink_to("/dev/stdout")
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    inode = target.stat().st_ino
    with open(target, "ab") as out:
        result = _save_with_stdout(family, output, out.fileno(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_archive(_appended(target)).json("manifest.json")[0]["RepoTags"] == ["app:1.0"]
    assert target.stat().st_ino == inode  # the same file, not a new one renamed over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "link", "store"]


def test_the_process_s_own_pid_names_its_stdout(family: Family, tmp_path: Path) -> None:
    """``/proc/<its pid>/fd/1``: the shell's ``$$`` is the pid hatchway runs as after exec."""
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    command = " ".join([*HATCHWAY, "save", "-q", "--store", str(family.root), "-o"])
    with open(target, "ab") as out:
        result = subprocess.run(
            ["sh", "-c", f'exec {command} "/proc/$$/fd/1" app:1.0'],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert read_archive(_appended(target)).names


def test_stdout_on_an_unnamed_file_receives_the_archive(family: Family, tmp_path: Path) -> None:
    """A temp file with no name (``#123 (deleted)`` is what its link shows) gets the archive,
    and no file of that made-up name appears (it got 0 bytes, and a stray file was left)."""
    work = tmp_path / "work"
    work.mkdir()
    with tempfile.TemporaryFile(dir=work) as out:
        result = _save_with_stdout(family, "/dev/stdout", out.fileno(), cwd=work)
        assert result.returncode == 0, result.stderr
        out.seek(0)
        assert read_archive(out.read()).json("manifest.json")[0]["RepoTags"] == ["app:1.0"]
    assert list(work.iterdir()) == []


def test_stderr_by_its_name(family: Family, tmp_path: Path) -> None:
    target = tmp_path / "err.bin"
    target.write_bytes(KEEP)
    with open(target, "ab") as err:
        result = subprocess.run(
            [*HATCHWAY, "save", "-q", "--store", str(family.root), "-o", "/dev/stderr", "app:1.0"],
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=120,
        )
    assert result.returncode == 0
    assert result.stdout == b""
    assert read_archive(_appended(target)).names


@pytest.mark.parametrize("output", ["/dev/stdout", "/dev/fd/1", "terminal"])
def test_a_terminal_is_refused_by_any_name(family: Family, output: str) -> None:
    """``-o -`` refused a terminal; ``-o /dev/stdout`` wrote the binary archive to it."""
    controller, terminal = pty.openpty()
    try:
        if output == "terminal":
            output = os.ttyname(terminal)
        result = _save_with_stdout(family, output, terminal)
        os.set_blocking(controller, False)
        try:
            shown = os.read(controller, 1 << 16)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 1
    assert "refusing to write an archive to a terminal" in error_line(result)
    assert shown == b""


def test_a_closed_stdout_is_refused_by_its_name(family: Family, tmp_path: Path) -> None:
    """Stdout closed (``>&-``) is held by a placeholder; ``-o /dev/stdout`` must not write
    the archive into it and succeed."""
    result = subprocess.run(
        [*HATCHWAY, "save", "-q", "--store", str(family.root), "-o", "/dev/stdout", "app:1.0"],
        stdout=None,
        stderr=subprocess.PIPE,
        timeout=120,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 1
    assert (
        error_line(result) == "hatchway: error: /dev/stdout (descriptor 1) is closed; use -o FILE"
    )


def test_a_descriptor_that_is_not_open_is_refused(family: Family, tmp_path: Path) -> None:
    """``/dev/fd/7`` the command did not inherit is no output (the event loop's own
    descriptors have such numbers)."""
    work = tmp_path / "work"
    work.mkdir()
    result = _save_with_stdout(family, "/dev/fd/7", subprocess.DEVNULL, cwd=work)
    assert result.returncode == 1
    assert (
        error_line(result) == "hatchway: error: /dev/fd/7 (descriptor 7) is not open; use -o FILE"
    )
    assert list(work.iterdir()) == []


def test_an_inherited_descriptor_is_written_through(family: Family, tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND)
    try:
        result = subprocess.run(
            [
                *HATCHWAY,
                "save",
                "-q",
                "--store",
                str(family.root),
                "-o",
                f"/dev/fd/{fd}",
                "app:1.0",
            ],
            stderr=subprocess.PIPE,
            timeout=120,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert read_archive(_appended(target)).names


def test_another_process_s_descriptor_is_appended_to(family: Family, tmp_path: Path) -> None:
    """``/proc/<pid>/fd/N`` of another process: its file is appended to in place, not
    replaced (the process would go on writing a file nobody can name)."""
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    inode = target.stat().st_ino
    with open(target, "ab") as out:
        holder = subprocess.Popen(["sleep", "600"], stdout=out)
    try:
        result = _save_with_stdout(family, f"/proc/{holder.pid}/fd/1", subprocess.DEVNULL)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    assert target.stat().st_ino == inode
    assert read_archive(_appended(target)).names


def test_a_file_that_stdout_writes_to_is_still_replaced_by_its_name(
    family: Family, tmp_path: Path
) -> None:
    """``-o f.bin >> f.bin``: a plain path is a file name, replaced atomically as ``-o FILE``
    promises (nothing goes to stdout when ``-o`` is given); only paths that name a
    descriptor are written through it."""
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    with open(target, "ab") as out:
        result = _save_with_stdout(family, str(target), out.fileno())
    assert result.returncode == 0, result.stderr
    assert read_archive(target.read_bytes()).names


# -- the library ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_library_writes_through_a_descriptor_named_by_path(
    family: Family, tmp_path: Path
) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND)
    try:
        result = await hatchway.save(["app:1.0"], f"/proc/self/fd/{fd}", store=family.root)
        os.write(fd, b"END")  # the descriptor is the caller's: still open, at the end
    finally:
        os.close(fd)
    raw = _appended(target)
    assert raw.endswith(b"END") and len(raw) == result.bytes_written + 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "store"]


@pytest.mark.anyio
async def test_the_library_refuses_a_read_only_descriptor(family: Family, tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(KEEP)
    fd = os.open(target, os.O_RDONLY)
    try:
        with pytest.raises(hatchway.OutputError, match="not open for writing"):
            await hatchway.save(["app:1.0"], f"/dev/fd/{fd}", store=family.root)
    finally:
        os.close(fd)
    assert target.read_bytes() == KEEP


def test_named_descriptor(tmp_path: Path) -> None:
    me = os.getpid()
    (tmp_path / "out").symlink_to("/dev/stdout")
    (tmp_path / "chain").symlink_to(tmp_path / "out")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "plain").write_bytes(b"")
    (tmp_path / "to-plain").symlink_to(tmp_path / "plain")
    found = {
        path: hatchway.named_descriptor(path)
        for path in [
            "/dev/stdout",
            "/dev/stderr",
            "/dev/fd/5",
            "/proc/self/fd/0",
            f"/proc/{me}/fd/3",
            "/proc/1/fd/1",
            str(tmp_path / "chain"),
        ]
    }
    assert found == {
        "/dev/stdout": hatchway.NamedDescriptor(me, 1),
        "/dev/stderr": hatchway.NamedDescriptor(me, 2),
        "/dev/fd/5": hatchway.NamedDescriptor(me, 5),
        "/proc/self/fd/0": hatchway.NamedDescriptor(me, 0),
        f"/proc/{me}/fd/3": hatchway.NamedDescriptor(me, 3),
        "/proc/1/fd/1": hatchway.NamedDescriptor(1, 1),
        str(tmp_path / "chain"): hatchway.NamedDescriptor(me, 1),
    }
    assert all(found[p].ours for p in found if p != "/proc/1/fd/1")  # type: ignore[union-attr]
    assert not hatchway.NamedDescriptor(1, 1).ours or me == 1
    thread = hatchway.named_descriptor("/proc/thread-self/fd/1")
    assert thread is not None and thread.fd == 1 and thread.ours
    for path in ["plain", "to-plain", "loop", "missing", "/dev/null", "/proc/self/fd", "/"]:
        assert hatchway.named_descriptor(tmp_path / path) is None, path


def test_the_cli_and_the_library_agree_on_a_pipe(family: Family) -> None:
    """``-o /dev/stdout`` into a pipe is the same archive as ``-o -``."""
    plain = subprocess.run(
        [*HATCHWAY, "save", "-q", "--store", str(family.root), "app:1.0"],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    named = _save_with_stdout(family, "/dev/stdout", subprocess.PIPE)
    assert named.returncode == 0 and named.stdout == plain
