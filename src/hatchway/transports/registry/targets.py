"""Where ``push`` puts each image: the ``--to`` destination and the naming rule.  Pure.

``--to`` takes two forms (``docker://`` optional):

``HOST[:PORT][/PREFIX]``
    A registry and an optional repository prefix.  Each image goes to ``HOST/PREFIX/`` + its
    repository path without its source's registry host, tags kept: ``nginx:1.25`` (that is
    ``docker.io/library/nginx:1.25``) goes to ``HOST/PREFIX/library/nginx:1.25`` — the path a
    containerd mirror asks ``HOST`` for — and ``127.0.0.1:5000/team/app:2`` to
    ``HOST/PREFIX/team/app:2``.  A name by digest (``repo@sha256:...``) keeps its repository and
    is pushed by digest; an image named only by its ID has no repository, so it is pushed by
    digest into ``HOST/PREFIX`` itself (which therefore needs a prefix).
``HOST[:PORT]/REPO:TAG``
    Exactly one image, pushed under that name (every name it was given maps to it).

A destination names no digest: the digest of what is pushed is known only once the layers
are (re)compressed.  Two different images mapped to one tag are refused before anything is
sent, so the tag cannot end up depending on which upload finished last.
"""

from __future__ import annotations

from dataclasses import dataclass

from hatchway.errors import InvalidArgument, InvalidReference
from hatchway.reference import DOCKER_TRANSPORT, Reference


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A parsed ``--to``: the registry, a repository prefix (``""``: none), and the one
    repository and tag of the single-image form (``tag`` set)."""

    registry: str
    prefix: str = ""
    tag: str | None = None

    @property
    def exact(self) -> bool:
        """The ``HOST/REPO:TAG`` form: one image, under exactly this name."""
        return self.tag is not None

    def __str__(self) -> str:
        name = self.registry + (f"/{self.prefix}" if self.prefix else "")
        return name + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True, slots=True)
class PushName:
    """One manifest to push: into ``repository``, under ``tag`` (``None``: by digest)."""

    repository: str
    tag: str | None


def parse_push_target(text: str) -> PushTarget:
    """Parse ``--to`` (see the module docstring); raises :class:`InvalidReference` (of the
    argument ``to``)."""
    rest = text.removeprefix(DOCKER_TRANSPORT).rstrip("/")
    if not rest:
        raise InvalidReference(text, "a push destination is HOST[:PORT][/PREFIX]", argument="to")
    if "@" in rest:
        raise InvalidReference(
            text, "a push destination names a repository or a tag, not a digest", argument="to"
        )
    host, _, path = rest.partition("/")
    tag = None
    if path and ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
    if path and not all(path.split("/")):
        raise InvalidReference(text, "empty path component", argument="to")
    try:
        Reference(host, path or "x", tag)
    except InvalidReference as exc:
        raise InvalidReference(text, exc.reason, argument="to") from None
    if tag is not None and not path:
        raise InvalidReference(text, "a tag needs a repository: HOST/REPO:TAG", argument="to")
    return PushTarget(host, path, tag)


def push_name(target: PushTarget, reference: Reference | None, image: str) -> PushName:
    """Where the image ``image`` (an ID, for messages) named ``reference`` goes.

    ``reference`` is a tag, a digest reference, or ``None`` for an image named by its ID.
    """
    if target.exact:
        return PushName(target.prefix, target.tag)
    if reference is None:
        if not target.prefix:
            raise InvalidArgument(
                "to",
                f"image {image.removeprefix('sha256:')[:12]} is named only by its ID, so it "
                f"has no repository to go to: give one, --to {target.registry}/REPO",
            )
        return PushName(target.prefix, None)
    repository = f"{target.prefix}/{reference.path}" if target.prefix else reference.path
    if reference.digest is not None and reference.tag is None:
        return PushName(repository, None)
    return PushName(repository, reference.tag or "latest")


def check_single(target: PushTarget, images: int) -> None:
    """The ``HOST/REPO:TAG`` form takes exactly one image."""
    if target.exact and images != 1:
        raise InvalidArgument(
            "to",
            f"--to {target} names one image, but the names given are {images} images; "
            f"push several images to a registry or a prefix: --to {target.registry}[/PREFIX]",
        )


def check_unique_tags(names: list[tuple[PushName, str]]) -> None:
    """No tag may receive two different images (``names``: each name with its image ID)."""
    owner: dict[tuple[str, str], str] = {}
    for name, image in names:
        if name.tag is None:
            continue
        key = (name.repository, name.tag)
        other = owner.setdefault(key, image)
        if other != image:
            raise InvalidArgument(
                "to",
                f"two images would be pushed to {name.repository}:{name.tag} "
                f"({other.removeprefix('sha256:')[:12]} and {image.removeprefix('sha256:')[:12]});"
                " push them separately or to different prefixes",
            )
