"""``python -m hatchway``: the same as the ``hatchway`` command."""

from hatchway.cli import main

main(prog_name="hatchway")
