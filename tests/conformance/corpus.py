"""The images every transport is tested with: small, but with every shape that matters.

``app:1.0`` and ``app:2.0`` share a gzip base layer (two tags of one repository, so a
repository name means two images); ``app:2.0`` adds a zstd and an uncompressed layer;
``tools:1`` uses Docker schema 2 media types; ``multi:1`` is an index of the host's platform and
one other.  Each is described by what any transport must give back for it: the image ID, the
platform manifest's digest (kept by transports that keep digests) and the layers' blobs.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from hatchway.model import Platform
from hatchway.testing.layout import BuiltImage, BuiltLayer, LayoutBuilder

#: Corpus images by the name they are tagged with.
NAMES = ("app:1.0", "app:2.0", "tools:1", "multi:1")


@dataclass(frozen=True)
class CorpusImage:
    """One image of the corpus: its tag, its image ID, the digest of the manifest a copy
    carries (for ``multi:1`` the host's platform manifest) and its layers."""

    name: str
    id: str
    manifest: str
    layers: tuple[BuiltLayer, ...]
    built: BuiltImage


@dataclass(frozen=True)
class Corpus:
    """The corpus written as an OCI layout at ``root`` (what every transport starts from)."""

    root: Path
    images: dict[str, CorpusImage]
    builder: LayoutBuilder

    def image(self, name: str) -> CorpusImage:
        return self.images[name]

    def blobs(self) -> set[str]:
        """Every distinct layer blob digest of the corpus."""
        return {layer.digest for image in self.images.values() for layer in image.layers}

    def layout_tar(self, out: Path) -> Path:
        """The layout as a tar (an OCI archive), members in a sorted walk."""
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.root.rglob("*")):
                tar.add(path, str(path.relative_to(self.root)), recursive=False)
        return out


def build_corpus(root: Path) -> Corpus:
    b = LayoutBuilder(root)
    base = b.layer({"etc/os-release": b"ID=conformance\n", "bin/": None}, compression="gzip")
    one = b.layer({"app/one": b"one\n" * 100}, compression="zstd")
    two = b.layer({"app/two": b"two\n" * 1000}, compression="none")
    tool = b.layer({"tools/t": bytes(range(256)) * 40}, compression="gzip")
    host = Platform.host()
    other = "arm64" if host.architecture != "arm64" else "amd64"
    native_layer = b.layer({"arch": f"{host.architecture}\n".encode()}, compression="gzip")
    foreign_layer = b.layer({"arch": f"{other}\n".encode()}, compression="gzip")
    app1 = b.image([base, one], created="2024-02-01T10:00:00Z")
    app2 = b.image([base, one, two], created="2024-03-01T10:00:00Z")
    tools = b.image([base, tool], docker=True, created="2024-04-01T00:00:00Z")
    native = b.image([base, native_layer], architecture=host.architecture, variant=host.variant)
    foreign = b.image([base, foreign_layer], architecture=other, variant="v8")
    multi = b.index([native, foreign])
    b.tag(app1, "app:1.0")
    b.tag(app2, "app:2.0")
    b.tag(tools, "tools:1")
    b.tag(multi, "multi:1")
    b.save()
    config = {"app:1.0": app1, "app:2.0": app2, "tools:1": tools, "multi:1": native}
    top = {"app:1.0": app1, "app:2.0": app2, "tools:1": tools, "multi:1": multi}
    images = {
        name: CorpusImage(name, image.config_digest, image.digest, image.layers, top[name])
        for name, image in config.items()
    }
    return Corpus(root, images, b)
