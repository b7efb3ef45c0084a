"""A source that sends each name to the source of its transport.

Names are routed by their parsed :class:`~hatchway.reference.Transport` (``docker://`` to the
registries, ``docker-archive:``/``oci-archive:``/``oci:`` to the archives, no prefix to the
local store), so one copy may mix them; the engine sees one source.  One source may serve
several transports (the archive source serves all three path transports).  Sources are
opened on first use, so a save of local names never imports the registry client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio

from hatchway.errors import StoreError
from hatchway.reference import ImageQuery, Transport
from hatchway.transports.base import ResolvedImage, Selection, Source

_MISSING = {
    Transport.STORE: (
        "no local store",
        "not a registry name; write docker://HOST/REPO[:TAG] to fetch from a registry, "
        "or name a local store",
    ),
    Transport.DOCKER: ("no registry", "registry names are not accepted here"),
    Transport.DOCKER_ARCHIVE: ("no archives", "archive names are not accepted here"),
    Transport.OCI_ARCHIVE: ("no archives", "archive names are not accepted here"),
    Transport.OCI: ("no archives", "OCI layout names are not accepted here"),
}


class Router:
    """Resolve each query with the source for its transport.

    ``sources`` maps a transport to a source, or to a function that makes one when the first
    name of that transport arrives.  A transport without a source fails with a
    :class:`~hatchway.errors.StoreError` that says what to write instead.  :meth:`aclose`
    closes every source this router made or was given.
    """

    def __init__(self, sources: Mapping[Transport, Source | Callable[[], Source]]) -> None:
        self._factories = dict(sources)
        self._open: dict[Transport, Source] = {}
        self._lock = anyio.Lock()
        self.description = "sources"

    async def source(self, transport: Transport) -> Source | None:
        """The source for ``transport`` (made now if it was given as a factory)."""
        async with self._lock:
            source = self._open.get(transport)
            if source is None:
                made = self._factories.get(transport)
                if made is None:
                    return None
                source = made if isinstance(made, Source) else made()
                self._open[transport] = source
            return source

    async def resolve(self, query: ImageQuery, selection: Selection) -> list[ResolvedImage]:
        source = await self.source(query.transport)
        if source is None:
            where, hint = _MISSING[query.transport]
            raise StoreError(where, f"{query.text}: {hint}")
        return await source.resolve(query, selection)

    async def aclose(self) -> None:
        opened: list[Source] = []
        for source in self._open.values():  # a source serving several transports closes once
            if all(source is not o for o in opened):
                opened.append(source)
        self._open = {}
        failed: BaseException | None = None
        with anyio.CancelScope(shield=True):
            for source in opened:
                try:
                    await source.aclose()
                except Exception as exc:  # close the others, then report the first failure
                    failed = failed or exc
        if failed is not None:
            raise failed
