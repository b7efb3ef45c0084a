"""``hatchway.testing``: helpers for testing code that uses hatchway (documented in
docs/testing.md), as ``trio.testing`` is for trio.

* :class:`LayoutBuilder` writes OCI image layouts (stores) with real, deterministic content:
  layers from file maps or tar files (gzip, zstd or uncompressed), images, multi-platform
  indexes and named entries;
* :class:`SlowStore` makes any source behave like a network store (latency before the first
  byte, a bandwidth per stream); :class:`CountingStore` counts how often each blob is read,
  to prove a shared layer is fetched once.

hatchway's own tests, benchmarks and sample store use exactly these.
"""

from hatchway.testing.layout import BuiltImage, BuiltLayer, LayoutBuilder, Symlink, layer_tar
from hatchway.testing.slow import CountingBlobSource, CountingStore, SlowBlobSource, SlowStore

__all__ = [
    "BuiltImage",
    "BuiltLayer",
    "CountingBlobSource",
    "CountingStore",
    "LayoutBuilder",
    "SlowBlobSource",
    "SlowStore",
    "Symlink",
    "layer_tar",
]
