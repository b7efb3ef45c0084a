"""The options several commands share, defined once, and running a command with progress."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hatchway import DEFAULT_JOBS, Platform, ProgressCallback, RegistryOptions
from hatchway.cli import signals

T = TypeVar("T")
Command = Callable[..., None]


class PlatformType(click.ParamType):  # type: ignore[type-arg,unused-ignore]
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


store_option = click.option(
    "--store",
    "store_dir",
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="The local store (an OCI image layout). Default: $HATCHWAY_STORE, else "
    "$XDG_DATA_HOME/hatchway/store (~/.local/share/hatchway/store).",
)
platform_option = click.option(
    "--platform",
    type=PlatformType(),
    help="Platform to pick from multi-platform images, e.g. linux/arm64/v8. Default: this host's.",
)
jobs_option = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1, max=256),
    default=DEFAULT_JOBS,
    show_default=True,
    help="Layers moved at once (fetched and verified, or copied into the output).",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress display.")


def registry_options(fn: Command) -> Command:
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


def registry_settings(
    creds: str | None, insecure: tuple[str, ...], ca_cert: str | None
) -> RegistryOptions:
    if creds is not None and ":" not in creds:
        raise click.BadParameter("expected USER:PASSWORD", param_hint="--creds")
    return RegistryOptions(creds=creds, insecure_registries=frozenset(insecure), ca_cert=ca_cert)


def execute(
    fn: Callable[[ProgressCallback | None], Awaitable[T]],
    *,
    quiet: bool,
    label: str,
    summary: Callable[[T], str],
) -> T:
    """Run ``fn`` on trio with progress bars on stderr when it is a terminal (and not
    ``quiet``), then print ``summary``.  On failure the bars are stopped *before* the error
    line is printed, so clearing them cannot wipe it; then the process exits."""
    if quiet or not sys.stderr.isatty():
        return _finish(lambda: signals.run(lambda: fn(None)))
    from rich.console import Console

    from hatchway.cli.console import RichProgress

    console = Console(stderr=True)
    renderer = RichProgress(console, label)
    with renderer:
        result = _finish(lambda: signals.run(lambda: fn(renderer)), before=renderer.stop)
    text = summary(result)
    if text:
        console.print(text, highlight=False)
    return result


def _finish(run: Callable[[], T], before: Callable[[], None] | None = None) -> T:
    try:
        return run()
    except signals.Exit as done:
        if before is not None:
            before()
        if done.message:
            click.echo(done.message, err=True)
        sys.exit(done.code)
