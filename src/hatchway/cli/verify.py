"""``hatchway verify``: check bundles before carrying them across an air gap."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

import hatchway
from hatchway import VerifyReport
from hatchway.cli.console import human_size
from hatchway.cli.options import execute, jobs_option, quiet_option


@click.command("verify")
@click.argument("archives", nargs=-1, required=True, metavar="ARCHIVE...")
@click.option("--json", "as_json", is_flag=True, help="Print every report as a JSON array.")
@jobs_option
@click.option(
    "--tmpdir",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where compressed archives and stdin are unpacked (default: $TMPDIR).",
)
@quiet_option
def verify_command(
    archives: tuple[str, ...], as_json: bool, jobs: int, tmpdir: Path | None, quiet: bool
) -> None:
    """Check archives the way every loader would, and more.

    \b
    ARCHIVE is a docker save archive of any era or an OCI archive, plain, .gz or .zst;
    - reads standard input. Checked: the tar is well formed, with no duplicate, absolute
    or '..' member names; every blob's sha256 equals its name and its size its
    descriptor; every config's digest; every layer's diffID (compressed layers are
    decompressed); manifest.json, index.json and repositories agree; every referenced
    member exists; legacy v1 ids and parents are consistent.
    Exit status 0: every archive is good (one summary line each). 1: one line per bad
    archive, naming the first bad member.
    """
    paths = ["/dev/stdin" if a == "-" else a for a in archives]

    async def run(progress: hatchway.ProgressCallback | None) -> list[VerifyReport]:
        return [
            await hatchway.verify(path, jobs=jobs, tmpdir=tmpdir, progress=progress)
            for path in paths
        ]

    reports = execute(run, quiet=quiet or as_json, label="verifying", summary=lambda r: "")
    for shown, report in zip(archives, reports, strict=True):
        if as_json:
            continue
        if report.ok:
            click.echo(_summary(shown, report))
        else:
            click.echo(f"hatchway: error: {report.problem}", err=True)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in reports], indent=2))
    if not all(r.ok for r in reports):
        raise SystemExit(1)


def _summary(shown: str, r: VerifyReport) -> str:
    packed = "" if r.compression == "none" else f", {r.compression}"
    return (
        f"{shown}: OK: {len(r.images)} image(s), {r.tags} tag(s), {r.layers} layer(s), "
        f"{human_size(r.layer_bytes)} of layers, {human_size(r.size)} tar{packed} "
        f"({', '.join(r.layouts)})"
    )
