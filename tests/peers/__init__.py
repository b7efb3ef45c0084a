"""Real peer components (registry, skopeo, containerd, dockerd, podman, oci-image-tool) for
tests.

Every server listens only on 127.0.0.1 or on a unix socket inside its own temporary
directory, is started lazily by the first test that asks for it, and is stopped by PID
(SIGTERM, then SIGKILL after a grace period) at the end of the session, after which its
directory is removed. How each component is started follows ``docs/peers.md``.

A missing binary makes the fixture fail (never skip) with the Debian package to install.

Outbound traffic guard: every peer runs with ``HTTP(S)_PROXY`` pointing at a closed loopback
port, so an accidental pull from a public registry fails at once on loopback instead of
leaving the machine. Go never proxies loopback addresses, so the local registry still works.

Import everything from ``tests.peers``; the modules hold one concern each:

- ``process``: binary lookup (Debian package map), the outbound traffic guard, one-shot
  commands, managed server processes and stopping them by PID;
- ``content``: what the tests put into images (``static_busybox``);
- ``registry_server``, ``containerd_daemon``, ``docker_daemon``: the servers;
- ``image_tools``: skopeo and oci-image-tool, which run once per call;
- ``podman_tool``: podman, daemonless, its state in a private directory;
- ``fixtures``: the session fixtures, re-exported here so that ``pytest_plugins =
  ["tests.peers"]`` in tests/conftest.py registers them (and has their asserts rewritten).

No module is named after a fixture (``registry``, ``containerd``, ...): the re-exported
fixture would shadow the submodule attribute of this package.
"""

from __future__ import annotations

from tests.peers.containerd_daemon import CTR_NAMESPACE, Containerd, start_containerd
from tests.peers.content import static_busybox
from tests.peers.docker_daemon import DockerDaemon, start_dockerd
from tests.peers.fixtures import containerd, dockerd, oci_image_tool, podman, registry, skopeo
from tests.peers.image_tools import OciImageTool, Skopeo
from tests.peers.podman_tool import Podman
from tests.peers.process import (
    ManagedProcess,
    PeerCommandError,
    PeerError,
    free_port,
    require_binary,
    run_command,
    stop_pid,
    wait_until_ready,
)
from tests.peers.registry_server import Registry, start_registry

__all__ = [
    "CTR_NAMESPACE",
    "Containerd",
    "DockerDaemon",
    "ManagedProcess",
    "OciImageTool",
    "PeerCommandError",
    "PeerError",
    "Podman",
    "Registry",
    "Skopeo",
    "containerd",
    "dockerd",
    "free_port",
    "oci_image_tool",
    "podman",
    "registry",
    "require_binary",
    "run_command",
    "skopeo",
    "start_containerd",
    "start_dockerd",
    "start_registry",
    "static_busybox",
    "stop_pid",
    "wait_until_ready",
]
