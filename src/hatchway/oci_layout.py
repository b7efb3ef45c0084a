"""The OCI image layout's facts, in one place: bytes, annotation names and the naming rule.

Pure (no I/O), so the archive formats, which embed an OCI layout in the ``docker`` archive,
share these facts with the store's reader and writer and with the test and sample builders.
(OCI image-spec ``image-layout.md``; the naming rule is hatchway's, docs/formats.md, "The OCI
image layout as a store".)

**Naming rule.**  An ``index.json`` descriptor is named by its ``io.containerd.image.name``
annotation when present (a full reference such as ``docker.io/library/busybox:latest``, as
containerd, Docker and hatchway write it), else by ``org.opencontainers.image.ref.name`` when
that holds a repository (``busybox:latest``, as ``skopeo copy ... oci:DIR:busybox:latest``
writes).  A bare ``ref.name`` tag such as ``latest`` names no repository: the image is listed
as ``<none>`` and is reachable by its ID or digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hatchway.model import OCI_INDEX, Descriptor
from hatchway.reference import DEFAULT_TAG, Reference, parse_stored_name

#: The ``oci-layout`` file: what Docker and containerd write (with the space).
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion": "1.0.0"}'
LAYOUT_VERSION = "1.0.0"
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: On an ``index.json`` entry for a referrer (a signature, an SBOM, an attestation): the
#: digest of the manifest or index it refers to.  Such entries carry no name annotation:
#: containerd's importer would make an image of a named one and fail to unpack it.
REFERRER_SUBJECT_ANNOTATION = "io.hatchway.referrer.subject"
#: On a referrer's entry: the tag it lives under in its image's repository (cosign's
#: ``sha256-<hex>.sig``, ``.att``, ``.sbom``).
REFERRER_TAG_ANNOTATION = "io.hatchway.referrer.tag"
INDEX_NAME = "index.json"
#: Beside ``index.json``: the file whose ``flock`` serialises its updates.
INDEX_LOCK_NAME = "index.json.lock"


def stored_name(annotations: Mapping[str, str]) -> str | None:
    """The annotation text that names an ``index.json`` entry (see the naming rule)."""
    return annotations.get(IMAGE_NAME_ANNOTATION) or annotations.get(REF_NAME_ANNOTATION)


def entry_reference(annotations: Mapping[str, str]) -> Reference | None:
    """The tagged reference an entry's annotations name, or ``None`` (see the naming rule)."""
    text = stored_name(annotations)
    return parse_stored_name(text) if text else None


def entry_key(annotations: Mapping[str, str]) -> Reference | str | None:
    """What makes two entries name the same thing: the tagged reference, or for an untagged
    containerd-style name (``host/repo@sha256:...``) its text; ``None`` for unnamed entries."""
    text = stored_name(annotations)
    if not text:
        return None
    return parse_stored_name(text) or (text if "@" in text else None)


def name_annotations(reference: Reference) -> dict[str, str]:
    """The annotations naming ``reference``: a tag as containerd and Docker write it (the
    qualified name, and the tag alone), or a digest reference by its qualified name only."""
    if reference.digest is not None:
        return {IMAGE_NAME_ANNOTATION: f"{reference.name}@{reference.digest}"}
    return {
        IMAGE_NAME_ANNOTATION: reference.qualified_tag(),
        REF_NAME_ANNOTATION: reference.tag or DEFAULT_TAG,
    }


def index_entry(
    media_type: str, descriptor: Descriptor, reference: Reference | None
) -> dict[str, Any]:
    """One ``index.json`` descriptor for a manifest, named ``reference`` (or unnamed), with
    the manifest's platform when it has one."""
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if reference is not None:
        entry["annotations"] = name_annotations(reference)
    if descriptor.platform is not None:
        platform = {"architecture": descriptor.platform.architecture, "os": descriptor.platform.os}
        if descriptor.platform.variant:
            platform["variant"] = descriptor.platform.variant
        entry["platform"] = platform
    return entry


def referrer_entry(
    media_type: str,
    descriptor: Descriptor,
    subject: str | None,
    tag: str | None,
    artifact_type: str | None,
) -> dict[str, Any]:
    """The ``index.json`` entry that keeps a referrer in a layout: unnamed (no image name),
    with what it refers to and, for a tag-based one, its tag."""
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if artifact_type:
        entry["artifactType"] = artifact_type
    annotations = {}
    if subject:
        annotations[REFERRER_SUBJECT_ANNOTATION] = subject
    if tag:
        annotations[REFERRER_TAG_ANNOTATION] = tag
    if annotations:
        entry["annotations"] = annotations
    return entry


def is_referrer_entry(annotations: Mapping[str, str]) -> bool:
    """Whether an ``index.json`` entry keeps a referrer rather than an image."""
    return REFERRER_SUBJECT_ANNOTATION in annotations or REFERRER_TAG_ANNOTATION in annotations


def index_document(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``index.json`` document holding ``manifests``."""
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
