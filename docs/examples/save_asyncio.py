"""Save two images from an OCI layout store into a file, under asyncio, with progress.

python docs/examples/save_asyncio.py STORE OUTPUT.tar
"""

import asyncio
import sys

import hatchway


def on_progress(event: hatchway.ProgressEvent) -> None:
    if isinstance(event, hatchway.CopyStarted):
        print(f"staging {event.layers} layers ({event.fetch_bytes} bytes stored)")
    elif isinstance(event, hatchway.WriteStarted):
        print(f"writing {event.total} bytes")


async def main(store: str, output: str) -> None:
    try:
        result = await hatchway.save(
            ["sample/app", "sample/tools:latest"],
            output,
            store=store,
            jobs=4,
            progress=on_progress,
        )
    except hatchway.HatchwayError as exc:
        sys.exit(f"error: {exc}")
    for image in result.images:
        print(image.id[:19], ", ".join(image.tags) or "<untagged>")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
