"""Registries: the OCI distribution API as a store, and ``pull`` into a local OCI layout.

Public API (re-exported here once):

* :class:`RegistryStore` — a :class:`~hatchway.stores.base.Store` for ``docker://`` names;
* :class:`RegistryOptions`, :class:`RetryPolicy`, :class:`Timeouts` — its configuration;
* :class:`Credentials` — a user name and a password that never prints;
* :func:`pull` and :class:`PullResult` — copy images into a local OCI image layout.

The options import nothing heavy; the client, store and pull (which import httpx) load on
first use, so ``import hatchway`` stays quick for local saves.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hatchway.stores.registry.credentials import Credentials
from hatchway.stores.registry.options import RegistryOptions, RetryPolicy, Timeouts

if TYPE_CHECKING:
    from hatchway.stores.registry.pulling import PulledImage, PullResult, pull
    from hatchway.stores.registry.store import RegistryImage, RegistryStore, RepositorySource

_LAZY = {
    "PulledImage": "pulling",
    "PullResult": "pulling",
    "pull": "pulling",
    "RegistryImage": "store",
    "RegistryStore": "store",
    "RepositorySource": "store",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
