"""The ``hatchway`` command: thin.  Parse arguments, build the store, run on trio, and turn
errors into one line and an exit code (0 success, 1 error, 2 usage, 130 interrupted)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import click

from hatchway import __version__
from hatchway.api import default_store_path, open_store, save
from hatchway.api import pull as pull_images
from hatchway.concurrency import collapse_errors
from hatchway.engine.save import DEFAULT_JOBS, SaveResult
from hatchway.errors import HatchwayError, OutputError
from hatchway.formats import ArchiveFormat
from hatchway.model import Platform, hex_of
from hatchway.progress import ProgressCallback
from hatchway.stores.oci_layout import ImageSummary
from hatchway.stores.registry.options import RegistryOptions

if TYPE_CHECKING:
    from hatchway.stores.registry.pulling import PullResult

T = TypeVar("T")

_STORE_HELP = (
    "OCI image layout to read images from. Default: $HATCHWAY_STORE, else "
    "$XDG_DATA_HOME/hatchway/store (~/.local/share/hatchway/store)."
)


class _PlatformType(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "os/arch[/variant]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Platform:
        if isinstance(value, Platform):
            return value
        try:
            return Platform.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_STORE_OPTION = click.option(
    "--store", "store_dir", metavar="DIR", type=click.Path(path_type=Path), help=_STORE_HELP
)
_PLATFORM_OPTION = click.option(
    "--platform",
    type=_PlatformType(),
    help="Platform to pick from multi-platform images, e.g. linux/arm64/v8. Default: this host's.",
)
_JOBS_OPTION = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1, max=256),
    default=DEFAULT_JOBS,
    show_default=True,
    help="Layers (blobs) fetched and verified at once.",
)
_QUIET_OPTION = click.option("-q", "--quiet", is_flag=True, help="No progress display.")


def _registry_options(fn: Callable[..., None]) -> Callable[..., None]:
    """The options that configure registry access, shared by ``save`` and ``pull``."""
    fn = click.option(
        "--ca-cert",
        metavar="FILE",
        type=click.Path(exists=True, dir_okay=False),
        help="Also trust the CA certificates in this PEM file for HTTPS registries.",
    )(fn)
    fn = click.option(
        "--insecure-registry",
        "insecure",
        metavar="HOST[:PORT]",
        multiple=True,
        help="Talk plain HTTP to this registry (loopback registries always are). Repeatable.",
    )(fn)
    fn = click.option(
        "--creds",
        metavar="USER:PASSWORD",
        envvar="HATCHWAY_CREDS",
        help="Registry credentials (default: $REGISTRY_AUTH_FILE, then ~/.docker/config.json).",
    )(fn)
    return fn


def _registry(creds: str | None, insecure: tuple[str, ...], ca_cert: str | None) -> RegistryOptions:
    if creds is not None and ":" not in creds:
        raise click.BadParameter("expected USER:PASSWORD", param_hint="--creds")
    return RegistryOptions(creds=creds, insecure_registries=frozenset(insecure), ca_cert=ca_cert)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="hatchway")
def main() -> None:
    """Save container images into docker-save-compatible tar archives, concurrently.

    \b
    Examples:
      hatchway images --store ./store
      hatchway save --store ./store -o app.tar app:1.0 busybox
      hatchway save --store ./store app | gzip > app.tar.gz
      hatchway save -o app.tar docker://127.0.0.1:5000/app:1.0
      hatchway pull docker://registry.example.com/team/app:2.0
    """


@main.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option(
    "-o", "--output", metavar="FILE", help="Write to FILE (atomically) instead of stdout."
)
@_STORE_OPTION
@click.option(
    "--format",
    "archive_format",
    type=click.Choice([f.value for f in ArchiveFormat]),
    default=ArchiveFormat.DOCKER.value,
    show_default=True,
    help="Archive layout: docker (Docker >= 25, OCI inside), docker-1.10 (Docker 1.10-24, "
    "skopeo's docker-archive) or docker-legacy (Docker <= 1.9).",
)
@_PLATFORM_OPTION
@_JOBS_OPTION
@click.option(
    "--tmpdir",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to stage layers (default: beside the output file, else $TMPDIR).",
)
@click.option("--fsync", is_flag=True, help="Flush -o FILE to disk before renaming it into place.")
@_QUIET_OPTION
@_registry_options
def save_cmd(
    names: tuple[str, ...],
    output: str | None,
    store_dir: Path | None,
    archive_format: str,
    platform: Platform | None,
    jobs: int,
    tmpdir: Path | None,
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
    Local and registry names may be mixed in one save.

    Without -o (or with -o -) the archive goes to standard output, which must not be a
    terminal. On any error nothing is written and the exit status is 1.
    """
    to_stdout = output in (None, "-")
    if to_stdout and _stdout_is_terminal():
        _fail(
            OutputError(
                "refusing to write an archive to a terminal; use -o FILE or redirect stdout"
            )
        )
    show = not quiet and sys.stderr.isatty()
    registry = _registry(creds, insecure, ca_cert)

    async def run(progress: ProgressCallback | None) -> SaveResult:
        return await save(
            list(names),
            1 if to_stdout else str(output),
            store=store_dir,
            format=archive_format,
            platform=platform,
            jobs=jobs,
            tmpdir=tmpdir,
            progress=progress,
            registry=registry,
            fsync=fsync,
        )

    def summary(r: SaveResult) -> str:
        tags = sum(len(i.tags) for i in r.images)
        where = "stdout" if to_stdout else output
        return (
            f"saved {len(r.images)} image(s), {tags} tag(s), {r.layers} layer(s): "
            f"{_human_size(r.bytes_written)} to {where}"
        )

    _with_progress(show, run, summary)


@main.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@_STORE_OPTION
@_PLATFORM_OPTION
@_JOBS_OPTION
@_QUIET_OPTION
@_registry_options
def pull(
    names: tuple[str, ...],
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
    replaced atomically under a lock, so pulls may run side by side.
    """
    registry = _registry(creds, insecure, ca_cert)

    async def run(progress: ProgressCallback | None) -> PullResult:
        return await pull_images(
            list(names),
            store=store_dir,
            registry=registry,
            platform=platform,
            jobs=jobs,
            progress=progress,
        )

    result = _with_progress(
        not quiet and sys.stderr.isatty(),
        run,
        lambda r: (
            f"pulled {len(r.images)} image(s): {r.blobs_fetched} blob(s), "
            f"{_human_size(r.bytes_fetched)} fetched"
        ),
    )
    if not quiet:
        for image in result.images:
            click.echo(f"{image.name}  {hex_of(image.id)[:12]}")


def _with_progress(
    show: bool, run: Callable[[ProgressCallback | None], Any], summary: Callable[[Any], str]
) -> Any:
    """Run ``run`` with rich progress bars on stderr (and a summary line) when ``show``."""
    if not show:
        return _run(lambda: run(None))
    from rich.console import Console  # only a terminal needs rich: keep start-up quick

    from hatchway.console import RichProgress

    console = Console(stderr=True)
    with RichProgress(console) as renderer:
        result = _run(lambda: run(renderer))
    console.print(summary(result), highlight=False)
    return result


main.add_command(save_cmd, name="save")


@main.command()
@_STORE_OPTION
@click.option("--platform", type=_PlatformType(), help="Platform shown for multi-platform images.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option("--no-trunc", is_flag=True, help="Show full image IDs.")
def images(
    store_dir: Path | None, platform: Platform | None, as_json: bool, no_trunc: bool
) -> None:
    """List the images in the store: name, image ID, created, size.

    SIZE is what the image occupies in the store (config and compressed layers). An entry
    whose name is a bare tag (no repository) is listed as <none>; save it by ID.
    """
    store = open_store(store_dir if store_dir is not None else default_store_path())

    async def run() -> list[ImageSummary]:
        try:
            return await store.list_images(platform)
        finally:
            await store.aclose()

    rows = _run(run)
    for row in rows:
        if row.error is not None:
            click.echo(f"hatchway: warning: {row.error}", err=True)
    good = [row for row in rows if row.image is not None]
    if as_json:
        click.echo(json.dumps([_image_json(row) for row in good], indent=2))
        return
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    now = time.time()
    for row in good:
        assert row.image is not None
        image_id = hex_of(row.image.id)
        table.append(
            (
                row.name.familiar_name if row.name else "<none>",
                (row.name.tag or "latest") if row.name else "<none>",
                image_id if no_trunc else image_id[:12],
                _ago(now, row.image.config.created),
                _human_size(row.size),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _image_json(row: ImageSummary) -> dict[str, Any]:
    assert row.image is not None
    config = row.image.config
    return {
        "name": row.name.recorded_tag() if row.name else None,
        "repository": row.name.familiar_name if row.name else None,
        "tag": (row.name.tag or "latest") if row.name else None,
        "annotation": row.annotation,
        "id": row.image.id,
        "short_id": hex_of(row.image.id)[:12],
        "digest": row.image.manifest_digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(config.created)),
        "platform": str(config.platform),
        "size": row.size,
    }


class _Terminated(Exception):
    """SIGTERM or SIGHUP arrived: the save was cancelled (and cleaned up) on purpose."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _cancel_on_signals(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn``, cancelling it (so its shielded cleanup runs) on SIGTERM or SIGHUP —
    what ``timeout``, ``docker stop`` and a closed terminal send.  Ctrl-C is trio's own."""
    received: list[int] = []
    result: list[T] = []
    with collapse_errors():
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                    async for signum in signals:
                        received.append(signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            result.append(await fn())
            tg.cancel_scope.cancel()
    if received:
        raise _Terminated(received[0])
    return result[0]


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on trio; map errors to one line and an exit code."""
    try:
        return anyio.run(_cancel_on_signals, fn, backend="trio")
    except HatchwayError as exc:
        _fail(exc)
    except _Terminated as exc:
        click.echo(f"hatchway: terminated ({exc})", err=True)
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:
        _interrupted()
    except OSError as exc:
        _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except BaseExceptionGroup as group:  # an unexpected failure inside a task group
        if group.subgroup(KeyboardInterrupt) is not None:
            _interrupted()
        if os.environ.get("HATCHWAY_DEBUG"):
            raise
        _fail(f"internal error: {_first_leaf(group)!r} (HATCHWAY_DEBUG=1 shows the traceback)")


def _interrupted() -> NoReturn:
    click.echo("hatchway: interrupted", err=True)
    sys.exit(130)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _stdout_is_terminal() -> bool:
    try:
        return os.isatty(1)
    except OSError:  # stdout closed: writing will fail with a clear error instead
        return False


def _fail(error: HatchwayError | str) -> NoReturn:
    click.echo(f"hatchway: error: {error}", err=True)
    sys.exit(1)


def _human_size(n: float) -> str:
    """Sizes as Docker prints them: decimal units, three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    raise AssertionError("unreachable")


def _ago(now: float, then: int) -> str:
    if then <= 0:
        return "N/A"
    seconds = max(0, int(now - then))
    for unit, span in (
        ("year", 31536000),
        ("month", 2592000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if seconds >= span:
            count = seconds // span
            return f"{count} {unit}{'s' * (count != 1)} ago"
    return "Less than a minute ago"
