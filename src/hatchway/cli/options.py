"""The options several commands share, defined once, and running a command with progress."""

from __future__ import annotations

import os
import stat
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


class RegularFile(click.Path):  # type: ignore[type-arg,unused-ignore]
    """An existing regular file.  A FIFO, a device or a socket is a usage error at once: the
    file is read later, on a worker thread, where a FIFO nobody writes would wait for ever
    and a device would never end (the library refuses them too, as errors of the operation)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            self.fail(f"{path!r}: {exc.strerror}", param, ctx)
        if not stat.S_ISREG(mode):
            self.fail(f"{path!r} is not a regular file", param, ctx)
        return path


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
    help="Layers worked on at once (fetched, checked, copied).",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress display.")


_TRUST_KEY = "hatchway.registry-trust"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Keep a trust/mirror option in the context for :func:`registry_settings` (these options
    are not passed to the command function, so every command with ``registry_options``
    gets them without naming them)."""
    ctx.meta.setdefault(_TRUST_KEY, {})[param.name] = value
    return value


def registry_options(fn: Command) -> Command:
    """The options that configure registry access, shared by ``save``, ``pull`` and ``push``.

    ``--creds``, ``--insecure-registry`` and ``--ca-cert`` are passed to the command as
    ``creds``, ``insecure``, ``ca_cert``; ``--client-cert``, ``--client-key`` and
    ``--registries-conf`` are not — :func:`registry_settings` picks them up from the context.
    """
    fn = click.option(
        "--registries-conf",
        metavar="FILE",
        type=RegularFile(),
        expose_value=False,
        callback=_remember,
        help="Follow the mirrors, rewrites and blocks of this containers-registries.conf "
        "instead of $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf or "
        "/etc/containers/registries.conf.",
    )(fn)
    fn = click.option(
        "--client-key",
        metavar="FILE",
        type=RegularFile(),
        expose_value=False,
        callback=_remember,
        help="The private key of --client-cert (PEM).",
    )(fn)
    fn = click.option(
        "--client-cert",
        metavar="FILE",
        type=RegularFile(),
        expose_value=False,
        callback=_remember,
        help="Present this client certificate (PEM) to registries that demand one (mutual "
        "TLS). Default: a NAME.cert + NAME.key pair in a certs.d directory of the registry.",
    )(fn)
    fn = click.option(
        "--ca-cert",
        metavar="FILE",
        type=RegularFile(),
        help="Also trust the CA certificates in this PEM file. Always trusted: the system's "
        "CAs and the *.crt files in ~/.config/containers/certs.d/HOST:PORT/, "
        "/etc/containers/certs.d/HOST:PORT/ and /etc/docker/certs.d/HOST:PORT/.",
    )(fn)
    fn = click.option(
        "--insecure-registry",
        "insecure",
        metavar="HOST[:PORT]",
        multiple=True,
        help="Do not verify this registry's TLS certificate, and use plain HTTP if it does "
        "not speak TLS (as loopback registries may). Repeatable.",
    )(fn)
    fn = click.option(
        "--creds",
        metavar="USER:PASSWORD",
        envvar="HATCHWAY_CREDS",
        show_envvar=True,
        help="Registry credentials (default: $REGISTRY_AUTH_FILE, then ~/.docker/config.json "
        "and its credential helpers).",
    )(fn)
    return fn


def registry_settings(
    creds: str | None, insecure: tuple[str, ...], ca_cert: str | None
) -> RegistryOptions:
    """The :class:`RegistryOptions` the command line asks for (see :func:`registry_options`)."""
    if creds is not None and ":" not in creds:
        raise click.BadParameter("expected USER:PASSWORD", param_hint="--creds")
    extra: dict[str, str | None] = click.get_current_context().meta.get(_TRUST_KEY, {})
    client_cert, client_key = extra.get("client_cert"), extra.get("client_key")
    if (client_cert is None) != (client_key is None):
        raise click.UsageError("--client-cert and --client-key go together: give both")
    return RegistryOptions(
        creds=creds,
        insecure_registries=frozenset(insecure),
        ca_cert=ca_cert,
        client_cert=client_cert,
        client_key=client_key,
        registries_conf=extra.get("registries_conf"),
    )


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
