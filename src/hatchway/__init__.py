"""hatchway: save container images into ``docker save``-compatible tar archives.

The public API, re-exported once here (``tests/test_public_api.py`` keeps this list honest)::

    await hatchway.save(names, output, store=..., format=..., platform=..., jobs=..., progress=...)
    await hatchway.pull(names, store=..., registry=hatchway.RegistryOptions(...))
    hatchway.open_store(path)        # an OCI image layout store
"""

from hatchway.api import default_store_path, open_store, pull, save
from hatchway.engine.save import SavedImage, SaveResult
from hatchway.errors import (
    AmbiguousReference,
    BlobNotFound,
    DigestMismatch,
    HatchwayError,
    InvalidReference,
    NoSuchImage,
    OutputError,
    PlatformNotFound,
    RegistryError,
    StoreError,
    UnsupportedMediaType,
)
from hatchway.formats import ArchiveFormat
from hatchway.model import Platform
from hatchway.progress import (
    LayerAdvanced,
    LayerStaged,
    LayerStarted,
    ProgressCallback,
    ProgressEvent,
    SaveFinished,
    SaveStarted,
    WriteAdvanced,
    WriteStarted,
)
from hatchway.stores.base import ResolvedImage, Store
from hatchway.stores.oci_layout import OCILayoutStore
from hatchway.stores.registry.options import RegistryOptions

__version__ = "0.1.0"

__all__ = [
    "AmbiguousReference",
    "ArchiveFormat",
    "BlobNotFound",
    "DigestMismatch",
    "HatchwayError",
    "InvalidReference",
    "LayerAdvanced",
    "LayerStaged",
    "LayerStarted",
    "NoSuchImage",
    "OCILayoutStore",
    "OutputError",
    "Platform",
    "PlatformNotFound",
    "RegistryError",
    "ProgressCallback",
    "ProgressEvent",
    "RegistryOptions",
    "ResolvedImage",
    "SaveFinished",
    "SaveResult",
    "SaveStarted",
    "SavedImage",
    "Store",
    "StoreError",
    "UnsupportedMediaType",
    "WriteAdvanced",
    "WriteStarted",
    "__version__",
    "default_store_path",
    "open_store",
    "pull",
    "save",
]
