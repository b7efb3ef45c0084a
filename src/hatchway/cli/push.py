"""``hatchway push``: images from the store (or registries) into a registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click

import hatchway
from hatchway import Platform, ProgressCallback, PushResult
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


@click.command("push")
@click.argument("names", nargs=-1, metavar="NAME...")
@images_from_option
@click.option(
    "--to",
    "to",
    required=True,
    metavar="DEST",
    help="[docker://]HOST[:PORT][/PREFIX] to push every image under its own repository path, "
    "or [docker://]HOST[:PORT]/REPO:TAG to push one image under that name.",
)
@store_option
@platform_option
@jobs_option
@click.option(
    "--compress-layers",
    type=click.Choice(["gzip", "zstd", "none"]),
    default="gzip",
    show_default=True,
    help="How layers stored uncompressed are compressed for the registry (deterministically: "
    "the same layer always gets the same digest). Compressed layers go up as they are.",
)
@click.option(
    "--tmpdir",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where layers being compressed or fetched are staged (default: $TMPDIR).",
)
@quiet_option
@registry_options
def push_command(
    names: tuple[str, ...],
    images_from: tuple[IO[str], ...],
    to: str,
    store_dir: Path | None,
    platform: Platform | None,
    jobs: int,
    compress_layers: str,
    tmpdir: Path | None,
    quiet: bool,
    creds: str | None,
    insecure: tuple[str, ...],
    ca_cert: str | None,
) -> None:
    """Push images into a registry: every blob once, many at a time, shared ones mounted.

    \b
    NAME is what `hatchway save` takes: a local name (repo, repo:tag, repo@sha256:..., an
    image ID), docker://HOST[:PORT]/REPO[:TAG|@DIGEST], or an archive
    (docker-archive:PATH[:REF], oci-archive:PATH[:REF], oci:DIR[:REF]).
    --images-from FILE adds the names listed in FILE (one per line, '#' comments; '-' stdin).
    \b
    --to HOST[:PORT][/PREFIX] sends each image to HOST/PREFIX/ + its repository path without
    its source's registry host, tags kept:
      nginx:1.25 (docker.io/library/nginx:1.25)  ->  HOST/PREFIX/library/nginx:1.25
    An image named by digest or ID is pushed by digest (an ID-only image into HOST/PREFIX).
    --to HOST[:PORT]/REPO:TAG pushes exactly one image under that name.

    Blobs the registry has are skipped; a blob needed in several repositories is uploaded
    once and mounted into the others. Tags are written last, once everything they need is in
    place, so a failed push leaves no tag pointing at missing content. Uncompressed layers
    are compressed (--compress-layers), so those images get a new manifest digest; their
    image ID stays.
    """
    all_names = collect_names(names, images_from)
    if _names_a_tag(to) and len(all_names) > 1:
        raise click.UsageError(
            f"--to {to} names one image (a tag), but {len(all_names)} names were given; "
            "push several images to HOST[:PORT][/PREFIX]"
        )
    registry = registry_settings(creds, insecure, ca_cert)

    async def run(progress: ProgressCallback | None) -> PushResult:
        return await hatchway.push(
            all_names,
            to,
            store=store_dir,
            registry=registry,
            platform=platform,
            jobs=jobs,
            compress_layers=compress_layers,
            tmpdir=tmpdir,
            progress=progress,
        )

    result = execute(run, quiet=quiet, label="reading", summary=_summary)
    if not quiet:
        if not sys.stderr.isatty():  # on a terminal, execute() printed it under the bars
            click.echo(_summary(result), err=True)
        for image in result.images:
            click.echo(f"{image.name}  {image.digest}")


def _summary(r: PushResult) -> str:
    images = len({i.id for i in r.images})
    return (
        f"pushed {images} image(s) as {len(r.images)} name(s): {r.blobs_uploaded} blob(s) "
        f"uploaded ({human_size(r.bytes_uploaded)}), {r.blobs_mounted} mounted, "
        f"{r.blobs_skipped} already there"
    )


def _names_a_tag(to: str) -> bool:
    """Whether ``--to`` is the one-image form ``HOST/REPO:TAG``."""
    path = to.removeprefix("docker://").partition("/")[2]
    return ":" in path.rsplit("/", 1)[-1]
