"""``docker save`` archives as a transport.

* ``destination``: :class:`~hatchway.transports.archive.destination.ArchiveDestination`,
  what ``save`` copies into: staging, then the archive plan (``hatchway.formats``) written by
  an output;
* ``outputs``: a path (atomic), a file descriptor, a device, an anyio stream — each writes a
  whole plan its own way (``writers``: positionally, or front to back);
* ``staging``: the private directory that holds verified layers until the archive is written.
"""
