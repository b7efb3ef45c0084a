"""The ``hatchway`` command group and its subcommands (imported by :func:`hatchway.cli.main`
once the stop signals are handled)."""

from __future__ import annotations

import click

from hatchway import __version__
from hatchway.cli.images import images_command
from hatchway.cli.load import load_command
from hatchway.cli.pull import pull_command
from hatchway.cli.push import push_command
from hatchway.cli.save import save_command
from hatchway.cli.verify import verify_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="hatchway")
def commands() -> None:
    """Save container images into docker-save-compatible tar archives, and push them into
    registries, concurrently.

    \b
    Examples:
      hatchway images --store ./store
      hatchway save --store ./store -o app.tar app:1.0 busybox
      hatchway save --store ./store app | gzip > app.tar.gz
      hatchway save -o app.tar docker://127.0.0.1:5000/app:1.0
      hatchway pull docker://registry.example.com/team/app:2.0
      hatchway push --store ./store --to registry.internal:5000/mirror app:1.0 busybox
      hatchway save --images-from images.txt -o bundle.tar.zst
      hatchway verify bundle.tar.zst && hatchway load bundle.tar.zst
    """


commands.add_command(save_command)
commands.add_command(pull_command)
commands.add_command(push_command)
commands.add_command(load_command)
commands.add_command(verify_command)
commands.add_command(images_command)
