"""Registries: the OCI distribution API as a source and as a destination.

* ``source``: :class:`~hatchway.transports.registry.source.RegistryStore`, a
  :class:`~hatchway.transports.base.Source` for ``docker://`` names;
* ``destination``: :class:`~hatchway.transports.registry.destination.RegistryDestination`,
  what ``push`` copies into, with ``targets`` (``--to`` and the naming rule, pure),
  ``push_plan`` (which repositories need which blob, pure), ``upload`` (the blob upload
  protocol) and ``staged`` (layers staged to be compressed or uploaded);
* ``client``, ``auth``, ``credentials``, ``protocol``: requests, authentication, where
  credentials come from, and the protocol's pure pieces;
* ``options``: :class:`RegistryOptions`, :class:`RetryPolicy`, :class:`Timeouts`.

The options import nothing heavy; the client and the source (which import httpx) are imported
only where a name needs a registry, so ``import hatchway`` stays quick for local saves.
"""
