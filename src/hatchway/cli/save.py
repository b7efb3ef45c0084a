"""``hatchway save``: images into one ``docker save``-compatible archive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import click

import hatchway
from hatchway import ArchiveFormat, Platform, ProgressCallback, SaveResult
from hatchway.cli import signals
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


@click.command("save")
@click.argument("names", nargs=-1, metavar="NAME...")
@images_from_option
@click.option(
    "-o", "--output", metavar="FILE", help="Write to FILE (atomically) instead of stdout."
)
@store_option
@click.option(
    "--format",
    "archive_format",
    type=click.Choice([f.value for f in ArchiveFormat]),
    default=ArchiveFormat.DOCKER.value,
    show_default=True,
    help="Archive layout: docker (Docker >= 25, OCI inside), docker-1.10 (Docker 1.10-24, "
    "skopeo's docker-archive) or docker-legacy (Docker <= 1.9).",
)
@platform_option
@jobs_option
@click.option(
    "--tmpdir",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to stage layers (default: beside the output file, else $TMPDIR).",
)
@click.option(
    "--compress",
    "compress",
    type=click.Choice(["gzip", "zstd", "none"]),
    help="Compress the whole archive (default: as -o's suffix says: .tar.gz/.tgz gzip, "
    ".tar.zst/.tar.zstd zstd; stdout uncompressed). Multithreaded, deterministic.",
)
@click.option(
    "--compress-level",
    "compress_level",
    type=int,
    metavar="N",
    help="zstd 1-19 (default 3); gzip 0-3 (ISA-L's levels, default 2).",
)
@click.option("--fsync", is_flag=True, help="Flush -o FILE to disk before renaming it into place.")
@quiet_option
@registry_options
def save_command(
    names: tuple[str, ...],
    images_from: tuple[IO[str], ...],
    output: str | None,
    store_dir: Path | None,
    archive_format: str,
    platform: Platform | None,
    jobs: int,
    tmpdir: Path | None,
    compress: str | None,
    compress_level: int | None,
    fsync: bool,
    quiet: bool,
    creds: str | None,
    insecure: tuple[str, ...],
    ca_cert: str | None,
) -> None:
    """Save one or more images (with their layers) to a tar archive.

    \b
    NAME is what `docker save` accepts:
      repo             every tag of the repository
      repo:tag         one tag
      repo@sha256:...  the image with that manifest digest (no tag recorded)
      ID               an image ID: full, sha256:..., or an unambiguous prefix
      docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   straight from a registry
    Docker Hub names are familiar: busybox == docker.io/library/busybox.
    Local and registry names may be mixed in one save. --images-from FILE adds the names
    listed in FILE (one per line, '#' comments; '-' reads stdin).

    Registries are reached over HTTPS, trusting the system's CAs, --ca-cert and the
    certs.d directories; a loopback registry that does not speak TLS gets plain HTTP.
    Mirrors in registries.conf are followed; the archive records the names given.

    Without -o (or with -o -) the archive goes to standard output, which must not be a
    terminal. -o NAME.tar.gz / .tgz / .tar.zst / .tar.zstd compresses the whole archive
    (--compress overrides, and compresses stdout). On any error nothing is written and the
    exit status is 1.
    """
    all_names = collect_names(names, images_from)
    to_stdout = output in (None, "-")
    _check_descriptor(1 if to_stdout else _descriptor_named(str(output)), output)
    registry = registry_settings(creds, insecure, ca_cert)

    async def run(progress: ProgressCallback | None) -> SaveResult:
        return await hatchway.save(
            all_names,
            1 if to_stdout else str(output),
            store=store_dir,
            format=archive_format,
            platform=platform,
            jobs=jobs,
            tmpdir=tmpdir,
            progress=progress,
            registry=registry,
            fsync=fsync,
            compression=compress,
            compression_level=compress_level,
        )

    def summary(r: SaveResult) -> str:
        tags = sum(len(i.tags) for i in r.images)
        where = "stdout" if to_stdout else output
        size = human_size(r.bytes_written)
        if r.bytes_written != r.archive_size:
            size += f" (compressed from {human_size(r.archive_size)})"
        return (
            f"saved {len(r.images)} image(s), {tags} tag(s), {r.layers} layer(s): {size} to {where}"
        )

    execute(run, quiet=quiet, label="staging", summary=summary)


def _descriptor_named(output: str) -> int | None:
    """The descriptor of this command that ``-o`` names (``/dev/stdout``, ``/dev/fd/N``...),
    if it names one."""
    named = hatchway.named_descriptor(output)
    return named.fd if named is not None and named.ours else None


def _check_descriptor(fd: int | None, output: str | None) -> None:
    """Stdout's rules, for ``-o -`` and every ``-o`` that names a descriptor: it was open
    when the command started (the event loop's own descriptors, opened since, are no
    output), and it is not a terminal."""
    if fd is None:
        return
    what = "standard output" if output in (None, "-") else f"{output} (descriptor {fd})"
    if fd in signals.start().closed_at_start or not _is_open(fd):
        _fail(f"{what} is {'closed' if fd <= 2 else 'not open'}; use -o FILE")
    if os.isatty(fd):
        _fail(f"refusing to write an archive to a terminal ({what}); use -o FILE or redirect it")


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _fail(message: str) -> None:
    click.echo(f"hatchway: error: {message}", err=True)
    raise SystemExit(1)
