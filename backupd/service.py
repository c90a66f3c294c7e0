"""What a feature (snapshots, binlog archiving, drills) plugs into the daemon.

The daemon composes services; each brings its own threads, control routes, status section,
warnings and metrics (registered on the shared, injected registry). Adding a feature is one
line in `backupd.daemon.build_services`, not an edit to the daemon's loop. This module is a
leaf: features import it, and only the daemon imports the features.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from backupd.config import Config
from backupd.control.server import Route
from backupd.notifications import Event
from backupd.storage import ObjectStore


def _no_notifications(_event: Event) -> None:
    """Default for contexts built without a daemon (tests, tools)."""


@dataclass(frozen=True)
class ServiceContext:
    config: Config
    store: ObjectStore
    registry: CollectorRegistry
    stop: threading.Event  # set once, when the daemon stops
    notify: Callable[[Event], None] = _no_notifications  # queue a notification; never blocks


class Service(Protocol):
    name: str

    def start(self) -> None:
        """Start threads; return quickly."""

    def stop(self) -> None:
        """Stop within the daemon's shutdown budget; must not raise for a normal stop."""

    def routes(self) -> list[Route]:
        """Control API routes under /v1/ this service answers."""

    def status(self) -> dict[str, Any]:
        """This service's section of the status document (include a one-line `summary`)."""

    def warnings(self) -> list[str]:
        """Reasons the daemon is unhealthy because of this service (empty when fine)."""

    def apply_config(self, context: ServiceContext) -> None:
        """Take a reloaded config (SIGHUP); keys that need a restart are logged, not applied."""
