"""Stream an archive into any byte stream under trio: here, gzip it on the fly.

    python docs/examples/stream_trio.py STORE OUTPUT.tar.gz

``hatchway.save`` accepts any anyio ``ByteSendStream`` (a socket, an HTTP response body, a
pipe to a subprocess).  Nothing is sent until every layer has been fetched and verified.
"""

import gzip
import sys

import anyio.abc
import trio

import hatchway


class GzipFileStream(anyio.abc.ByteSendStream):
    """A ByteSendStream that gzips what it is sent into a file (blocking I/O on a thread)."""

    def __init__(self, path: str) -> None:
        self._file = gzip.open(path, "wb")  # noqa: SIM115 - closed in aclose()

    async def send(self, item: bytes) -> None:
        await anyio.to_thread.run_sync(self._file.write, item)

    async def send_eof(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._file.close)


async def main(store: str, output: str) -> None:
    async with GzipFileStream(output) as stream:
        result = await hatchway.save(["sample/app:2.0"], stream, store=store)
    print(f"{result.bytes_written} bytes of archive, gzipped into {output}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
