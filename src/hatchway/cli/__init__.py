"""The ``hatchway`` command: thin.  Each command parses its arguments, calls the public API
(``import hatchway``, nothing else of the library) on trio, and turns the outcome into output,
one error line and an exit code (``signals``); ``console`` draws progress and tables."""

from __future__ import annotations

import sys

import click

from hatchway import __version__
from hatchway.cli.images import images_command
from hatchway.cli.load import load_command
from hatchway.cli.pull import pull_command
from hatchway.cli.push import push_command
from hatchway.cli.save import save_command
from hatchway.cli.verify import verify_command

# When httpx is imported it also imports its own command-line tool, if what that needs is
# installed (rich, pygments, click: ~50 ms of this command's start-up).  This process is
# ours and never runs that tool: its import fails, and httpx falls back to a stub.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="hatchway")
def main() -> None:
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


main.add_command(save_command)
main.add_command(pull_command)
main.add_command(push_command)
main.add_command(load_command)
main.add_command(verify_command)
main.add_command(images_command)
