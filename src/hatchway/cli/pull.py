"""``hatchway pull``: images from registries into the local store."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import click

import hatchway
from hatchway import Platform, ProgressCallback, PullResult
from hatchway.cli.console import human_size
from hatchway.cli.names import collect_names, images_from_option
from hatchway.cli.options import (
    execute,
    jobs_option,
    platform_option,
    quiet_option,
    registry_options,
    registry_settings,
    store_option,
)


@click.command("pull")
@click.argument("names", nargs=-1, metavar="NAME...")
@images_from_option
@store_option
@platform_option
@jobs_option
@quiet_option
@registry_options
def pull_command(
    names: tuple[str, ...],
    images_from: tuple[IO[str], ...],
    store_dir: Path | None,
    platform: Platform | None,
    jobs: int,
    quiet: bool,
    creds: str | None,
    insecure: tuple[str, ...],
    ca_cert: str | None,
) -> None:
    """Copy images from registries into the local store, to save them later (often, fast).

    \b
    NAME is [docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]; the image is stored as HOST/REPO:TAG
    (Docker Hub names as docker.io/library/...). Multi-platform images store the manifest
    for --platform (default: this host's). Blobs are written atomically and index.json is
    replaced atomically under a lock, so pulls may run side by side. --images-from FILE
    adds the names listed in FILE (one per line, '#' comments; '-' reads stdin).

    Registries are reached over HTTPS, trusting the system's CAs, --ca-cert and the
    certs.d directories; a loopback registry that does not speak TLS gets plain HTTP.
    Mirrors in registries.conf are followed; the store records the names given.
    """
    all_names = collect_names(names, images_from)
    registry = registry_settings(creds, insecure, ca_cert)

    async def run(progress: ProgressCallback | None) -> PullResult:
        return await hatchway.pull(
            all_names,
            store=store_dir,
            registry=registry,
            platform=platform,
            jobs=jobs,
            progress=progress,
        )

    result = execute(
        run,
        quiet=quiet,
        label="pulling",
        summary=lambda r: (
            f"pulled {len(r.images)} image(s): {r.blobs_fetched} blob(s), "
            f"{human_size(r.bytes_fetched)} fetched"
        ),
    )
    if not quiet:
        for image in result.images:
            click.echo(f"{image.name}  {image.id.removeprefix('sha256:')[:12]}")
