"""The local OCI image layout — hatchway's store — as a source and a destination.

* ``spec`` (pure): the layout's bytes, annotation names and naming rule, shared with the
  ``docker`` archive format and the builders in :mod:`hatchway.testing`;
* ``source``: :class:`~hatchway.transports.layout.source.OCILayoutStore` reads images;
* ``destination``: atomic blob writes, the locked ``index.json`` update, and the destination
  that ``pull`` copies into.

This package imports nothing at import time, so the pure core may use ``spec``.
"""
