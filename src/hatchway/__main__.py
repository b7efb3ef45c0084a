"""``python -m hatchway``: the same as the ``hatchway`` command (its entry point,
``_hatchway_cli``, handles stop signals before anything of the library is imported)."""

from _hatchway_cli import main

main(prog_name="hatchway")
