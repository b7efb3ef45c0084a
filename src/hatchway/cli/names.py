"""Image names from the command line and from ``--images-from FILE`` lists.

An image list is what air-gap tooling passes around (k3s' ``images.txt``, k0s' image list on
stdin): one name per line.  Surrounding blanks are stripped; empty lines and lines starting
with ``#`` are ignored.  The names of the list follow the names given as arguments, in order
(so duplicates behave exactly as duplicates on the command line: the image is saved once).
A UTF-8 byte order mark (what some Windows editors write) is ignored.  A list is at most
``LIST_MAX`` characters: ``/dev/zero`` or an endless ``yes`` is refused, not read into memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO

import click

Command = Callable[..., None]

#: The longest image list read (4 Mi characters: some 80 000 names).
LIST_MAX = 4 << 20


def images_from_option(fn: Command) -> Command:
    """``--images-from FILE`` (repeatable; ``-`` reads standard input)."""
    return click.option(
        "--images-from",
        "images_from",
        metavar="FILE",
        multiple=True,
        type=click.File("r", encoding="utf-8"),
        help="Also take names from FILE ('-' for stdin): one per line, blank lines and "
        "'#' comments ignored. Repeatable.",
    )(fn)


def parse_image_list(text: str) -> list[str]:
    """The names of an image list, in order (see the module docstring)."""
    names = []
    for line in text.removeprefix("\ufeff").splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            names.append(name)
    return names


def collect_names(
    arguments: Sequence[str], lists: Sequence[IO[str]], *, what: str = "image name"
) -> list[str]:
    """The names given as arguments, then those of each list; none at all is a usage error."""
    names = list(arguments)
    for stream in lists:
        where = getattr(stream, "name", "the image list")
        try:
            text = stream.read(LIST_MAX + 1)
        except UnicodeDecodeError:
            raise click.BadParameter(
                f"{where}: not UTF-8 text", param_hint="--images-from"
            ) from None
        except OSError as exc:
            raise click.BadParameter(
                f"{where}: cannot read ({exc.strerror or exc})", param_hint="--images-from"
            ) from None
        if len(text) > LIST_MAX:
            raise click.BadParameter(
                f"{where}: longer than {LIST_MAX >> 20} Mi characters: not an image list",
                param_hint="--images-from",
            )
        names += parse_image_list(text)
    if not names:
        raise click.UsageError(f"no {what} given (as arguments or with --images-from)")
    return names
