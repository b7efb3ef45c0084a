"""``hatchway images``: what is in the local store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

import hatchway
from hatchway import ImageSummary, Platform
from hatchway.cli.console import ago, human_size, table
from hatchway.cli.options import PlatformType, execute, store_option


@click.command("images")
@store_option
@click.option("--platform", type=PlatformType(), help="Platform shown for multi-platform images.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option("--no-trunc", is_flag=True, help="Show full image IDs.")
def images_command(
    store_dir: Path | None, platform: Platform | None, as_json: bool, no_trunc: bool
) -> None:
    """List the images in the store: name, image ID, created, size.

    SIZE is what the image occupies in the store (config and compressed layers). An entry
    whose name is a bare tag (no repository) is listed as <none>; save it by ID.
    """
    rows = execute(
        lambda _: hatchway.list_images(store_dir, platform=platform),
        quiet=True,
        label="",
        summary=str,
    )
    for row in rows:
        if row.error is not None:
            click.echo(f"hatchway: warning: {row.error}", err=True)
    good = [row for row in rows if row.image is not None]
    if as_json:
        click.echo(json.dumps([_image_json(row) for row in good], indent=2))
        return
    lines = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for row in good:
        assert row.image is not None
        image_id = row.image.id.removeprefix("sha256:")
        lines.append(
            (
                row.name.familiar_name if row.name else "<none>",
                (row.name.tag or "latest") if row.name else "<none>",
                image_id if no_trunc else image_id[:12],
                ago(row.image.config.created),
                human_size(row.size),
            )
        )
    for line in table(lines):
        click.echo(line)


def _image_json(row: ImageSummary) -> dict[str, Any]:
    assert row.image is not None
    config = row.image.config
    return {
        "name": row.name.recorded_tag() if row.name else None,
        "repository": row.name.familiar_name if row.name else None,
        "tag": (row.name.tag or "latest") if row.name else None,
        "annotation": row.annotation,
        "id": row.image.id,
        "short_id": row.image.id.removeprefix("sha256:")[:12],
        "digest": row.image.manifest_digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(config.created)),
        "platform": str(config.platform),
        "size": row.size,
    }
