"""``hatchway push`` as a user runs it: names and digests on stdout, a summary on stderr,
usage errors (exit 2), one-line errors (exit 1), help that teaches the naming rule."""

from __future__ import annotations

import re

import pytest

from tests.peers import Registry
from tests.support import Family
from tests.test_cli import error_line, run

pytestmark = pytest.mark.peers


def test_push_prints_each_name_and_a_summary(
    family: Family, push_target: Registry, prefix: str
) -> None:
    to = f"{push_target.host}/{prefix}"
    done = run("push", "--store", str(family.root), "--to", to, "app:1.0", "tools")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert [ln.split()[0] for ln in lines] == [
        f"{to}/library/app:1.0",
        f"{to}/library/tools:latest",
    ]
    assert lines[0].split()[1] == family.images["app1"].digest
    summary = done.stderr.decode().strip()
    assert re.fullmatch(
        r"pushed 2 image\(s\) as 2 name\(s\): 5 blob\(s\) uploaded \([0-9.]+kB\), "
        r"1 mounted, 0 already there",
        summary,
    ), summary
    quiet = run("push", "-q", "--store", str(family.root), "--to", to, "app:1.0")
    assert quiet.returncode == 0 and quiet.stdout == b"" and quiet.stderr == b""
    usage = run("push", "--store", str(family.root), "--to", f"{to}/x:1", "app:1.0", "tools")
    assert usage.returncode == 2 and b"names one image" in usage.stderr
    missing = run("push", "--store", str(family.root), "--to", to, "nope:1")
    assert missing.returncode == 1
    assert error_line(missing) == "hatchway: error: No such image: nope:1"
    bad = run("push", "--store", str(family.root), "--to", f"{to}/UPPER", "app:1.0")
    assert bad.returncode == 2 and b"Invalid value for '--to'" in bad.stderr  # a usage error
    assert b"invalid repository path" in bad.stderr
    helped = run("push", "--help")
    assert b"HOST/PREFIX/library/nginx:1.25" in helped.stdout
