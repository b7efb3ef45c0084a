"""Registries: the OCI distribution API as a store, and ``pull`` into a local OCI layout.

Public API (re-exported here once):

* :class:`RegistryStore` — a :class:`~hatchway.stores.base.Store` for ``docker://`` names;
* :class:`RegistryOptions`, :class:`RetryPolicy`, :class:`Timeouts` — its configuration;
* :class:`Credentials` — a user name and a password that never prints;
* :func:`pull` and :class:`PullResult` — copy images into a local OCI image layout.
"""

from hatchway.stores.registry.credentials import Credentials
from hatchway.stores.registry.options import RegistryOptions, RetryPolicy, Timeouts
from hatchway.stores.registry.pull import PulledImage, PullResult, pull
from hatchway.stores.registry.store import RegistryImage, RegistryStore, RepositorySource

__all__ = [
    "Credentials",
    "PullResult",
    "PulledImage",
    "RegistryImage",
    "RegistryOptions",
    "RegistryStore",
    "RepositorySource",
    "RetryPolicy",
    "Timeouts",
    "pull",
]
