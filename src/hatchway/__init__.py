"""hatchway: save container images into ``docker save``-compatible tar archives.

The public API, re-exported once here (``tests/test_public_api.py`` keeps this list honest)::

    await hatchway.save(names, output, store=..., format=..., platform=..., jobs=..., progress=...)
    await hatchway.pull(names, store=..., registry=hatchway.RegistryOptions(...))
    await hatchway.push(names, "registry.example:5000/mirror", store=..., registry=...)
    await hatchway.load(archives, store=...)
    await hatchway.verify(archive)   # a VerifyReport
    await hatchway.list_images(store)
    hatchway.open_store(path)        # an OCI image layout store, a Source
    async with hatchway.Session(...) as session: ...   # many operations, sharing fetches

Everything else (``hatchway.engine``, ``hatchway.transports``, ...) is implementation; the
command line uses only what is exported here.  ``hatchway.testing`` holds documented helpers
for tests.
"""

from hatchway.api import list_images, load, open_store, pull, push, save, verify
from hatchway.descriptors import NamedDescriptor, named_descriptor
from hatchway.errors import (
    AmbiguousReference,
    BlobNotFound,
    ConfigError,
    DigestMismatch,
    HatchwayError,
    InvalidArgument,
    InvalidReference,
    MalformedContent,
    NoSuchImage,
    OutputError,
    PlatformNotFound,
    RegistryError,
    StoreError,
    UnsupportedMediaType,
)
from hatchway.formats import ArchiveFormat
from hatchway.limits import DEFAULT_JOBS
from hatchway.model import Compression, Platform
from hatchway.progress import (
    CopyFinished,
    CopyStarted,
    LayerAdvanced,
    LayerDone,
    LayerStarted,
    ProgressCallback,
    ProgressEvent,
    UploadAdvanced,
    UploadDone,
    UploadStarted,
    WriteAdvanced,
    WriteStarted,
)
from hatchway.results import (
    LoadedImage,
    LoadResult,
    PulledImage,
    PullResult,
    PushedImage,
    PushResult,
    SavedImage,
    SaveResult,
    VerifiedImage,
    VerifyReport,
)
from hatchway.session import Progress, Session, default_store_path, progress_stream
from hatchway.transports.archive.outputs import Output
from hatchway.transports.base import (
    Artifact,
    BlobCapabilities,
    BlobOrigin,
    BlobSource,
    Document,
    LocalBlob,
    ResolvedImage,
    Selection,
    Source,
)
from hatchway.transports.layout.source import ImageSummary, OCILayoutStore
from hatchway.transports.registry.options import RegistryOptions, RetryPolicy, Timeouts

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_JOBS",
    "AmbiguousReference",
    "ArchiveFormat",
    "Artifact",
    "BlobCapabilities",
    "BlobNotFound",
    "BlobOrigin",
    "BlobSource",
    "Compression",
    "ConfigError",
    "CopyFinished",
    "CopyStarted",
    "DigestMismatch",
    "Document",
    "HatchwayError",
    "ImageSummary",
    "InvalidArgument",
    "InvalidReference",
    "LayerAdvanced",
    "LayerDone",
    "LayerStarted",
    "LoadResult",
    "LoadedImage",
    "LocalBlob",
    "MalformedContent",
    "NamedDescriptor",
    "NoSuchImage",
    "OCILayoutStore",
    "Output",
    "OutputError",
    "Platform",
    "PlatformNotFound",
    "Progress",
    "ProgressCallback",
    "ProgressEvent",
    "PullResult",
    "PulledImage",
    "PushResult",
    "PushedImage",
    "RegistryError",
    "RegistryOptions",
    "ResolvedImage",
    "RetryPolicy",
    "SaveResult",
    "SavedImage",
    "Selection",
    "Session",
    "Source",
    "StoreError",
    "Timeouts",
    "UnsupportedMediaType",
    "UploadAdvanced",
    "UploadDone",
    "UploadStarted",
    "VerifiedImage",
    "VerifyReport",
    "WriteAdvanced",
    "WriteStarted",
    "__version__",
    "default_store_path",
    "list_images",
    "load",
    "named_descriptor",
    "open_store",
    "progress_stream",
    "pull",
    "push",
    "save",
    "verify",
]
