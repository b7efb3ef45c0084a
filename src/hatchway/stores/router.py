"""A store that routes each name to where it lives: registries or the local store.

``docker://`` names go to the registry store; every other name (a repository, a tag, an
image ID) goes to the local store.  One save may mix both; the engine sees one store.
"""

from __future__ import annotations

from hatchway.errors import StoreError
from hatchway.model import Platform
from hatchway.reference import ImageQuery
from hatchway.stores.base import ResolvedImage, Store


class RouterStore:
    """Send ``docker://`` queries to ``registry`` and the rest to ``local``.

    ``local`` may be ``None`` (no local store configured): a bare name then fails with a
    :class:`~hatchway.errors.StoreError` that says registry names need ``docker://``.
    :meth:`aclose` closes both stores.
    """

    def __init__(self, local: Store | None, registry: Store) -> None:
        self.local = local
        self.registry = registry
        parts = [s.description for s in (local, registry) if s is not None]
        self.description = " + ".join(parts)

    async def resolve(self, query: ImageQuery, platform: Platform | None) -> list[ResolvedImage]:
        if query.registry:
            return await self.registry.resolve(query, platform)
        if self.local is None:
            raise StoreError(
                "no local store",
                f"{query.text}: not a registry name; write docker://HOST/REPO[:TAG] to fetch "
                "from a registry, or name a local store",
            )
        return await self.local.resolve(query, platform)

    async def aclose(self) -> None:
        try:
            await self.registry.aclose()
        finally:
            if self.local is not None:
                await self.local.aclose()
