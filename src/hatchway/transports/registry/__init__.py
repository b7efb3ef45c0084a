"""Registries: the OCI distribution API as a source.

* ``source``: :class:`~hatchway.transports.registry.source.RegistryStore`, a
  :class:`~hatchway.transports.base.Source` for ``docker://`` names;
* ``client``, ``auth``, ``credentials``, ``protocol``: requests, authentication, where
  credentials come from, and the protocol's pure pieces;
* ``options``: :class:`RegistryOptions`, :class:`RetryPolicy`, :class:`Timeouts`.

The options import nothing heavy; the client and the source (which import httpx) are imported
only where a name needs a registry, so ``import hatchway`` stays quick for local saves.
"""
