"""Prometheus metrics on an injected registry, served over HTTP on `[metrics] listen`.

Components get the metric objects they update from here; nothing touches prometheus_client's
global registry, so tests build as many daemons as they like in one process.
"""

from __future__ import annotations

import platform
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from backupd import __version__
from backupd.config import parse_listen

PREFIX = "backupd"


class Metrics:
    """The daemon's metric families (each feature adds its own block here)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "backupd version and Python it runs on (always 1)",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.up = Gauge(
            f"{PREFIX}_component_up",
            "1 when a dependency answered its last probe",
            ["component"],
            registry=r,
        )
        self.probe_timestamp = Gauge(
            f"{PREFIX}_component_last_probe_timestamp_seconds",
            "When a dependency was last probed",
            ["component"],
            registry=r,
        )
        self.probe_failures = Counter(
            f"{PREFIX}_component_probe_failures",
            "Failed probes of a dependency",
            ["component"],
            registry=r,
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads",
            "SIGHUP reloads by result",
            ["result"],
            registry=r,
        )
        self.control_requests = Counter(
            f"{PREFIX}_control_requests",
            "Control API requests by status class",
            ["status"],
            registry=r,
        )
        self.setting_risk = Gauge(
            f"{PREFIX}_server_setting_risk",
            "1 while a server setting puts the archive at risk (docs/operations.md)",
            ["setting"],
            registry=r,
        )


class MetricsServer:
    """The HTTP endpoint; stop() shuts it down so a restart can bind the port again."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        self.listen = listen
        self._registry = registry
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        host, port = parse_listen(self.listen)
        self._server, self._thread = start_http_server(port, addr=host, registry=self._registry)

    @property
    def address(self) -> str:
        """The bound host:port (differs from `listen` when it asked for port 0)."""
        if self._server is None:
            return ""
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
