"""``hatchway load``: archives into the local store."""

from __future__ import annotations

import os
from pathlib import Path

import click

import hatchway
from hatchway import LoadResult, Platform, ProgressCallback
from hatchway.cli.console import human_size
from hatchway.cli.options import execute, jobs_option, platform_option, quiet_option, store_option


@click.command("load")
@click.argument("archives", nargs=-1, metavar="[ARCHIVE]...")
@store_option
@platform_option
@jobs_option
@click.option(
    "--tmpdir",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where compressed archives are unpacked (default: $TMPDIR).",
)
@quiet_option
def load_command(
    archives: tuple[str, ...],
    store_dir: Path | None,
    platform: Platform | None,
    jobs: int,
    tmpdir: Path | None,
    quiet: bool,
) -> None:
    """Import every image of one or more archives into the local store.

    \b
    ARCHIVE is a path, its kind recognised by its content:
      a `docker save` archive of any era (hatchway, Docker, podman, skopeo)
      an OCI archive (a tar of an OCI image layout), or an OCI layout directory
      plain, .gz or .zst compressed;  - (or no ARCHIVE) reads standard input
    or, to pick one image, docker-archive:PATH:NAME|@N, oci-archive:PATH:REF, oci:DIR:REF.
    Images are stored under the names the archive records (untagged ones by ID only);
    every blob is verified and stored once, and index.json is updated atomically under a
    lock, so loads and pulls may run side by side. On any error the store is unchanged.
    """
    names = [("/dev/stdin" if a == "-" else a) for a in archives]
    if not names:
        if _stdin_is_terminal():
            raise click.UsageError("no ARCHIVE given, and standard input is a terminal")
        names = ["/dev/stdin"]

    async def run(progress: ProgressCallback | None) -> LoadResult:
        return await hatchway.load(
            names, store=store_dir, platform=platform, jobs=jobs, tmpdir=tmpdir, progress=progress
        )

    result = execute(
        run,
        quiet=quiet,
        label="loading",
        summary=lambda r: (
            f"loaded {len(r.images)} name(s): {r.blobs_stored} blob(s), "
            f"{human_size(r.bytes_stored)} stored"
        ),
    )
    if not quiet:
        for image in result.images:
            if image.name is not None:
                click.echo(f"Loaded image: {image.name}")
            else:
                click.echo(f"Loaded image ID: {image.id}")


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False
