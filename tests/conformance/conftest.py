"""The corpus, built once per session (each transport copies it into a place of its own)."""

from __future__ import annotations

import os

import pytest

from tests.conformance.corpus import Corpus, build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("conformance") / "corpus")


def open_descriptors() -> set[str]:
    """What the descriptors this process has open are (to show a transport closed its own)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the directory's own descriptor, gone by now
    return found
