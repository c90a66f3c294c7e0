"""The daemon: composes the components, runs the main loop, reloads and stops them.

Signal handlers only set flags and wake the loop; the loop (one `cycle` per wake) does the
work. Every component has its own guarded stop so one failure cannot block shutdown.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from types import FrameType
from typing import Any

from backupd import database
from backupd.alert_gauges import AlertGauges
from backupd.binlog.service import BinlogService
from backupd.config import Config, DaemonSection
from backupd.config_checks import impossible_combinations
from backupd.config_loader import load_config
from backupd.control.limits import ROLE_NAMES, Limits
from backupd.control.peer import Role
from backupd.control.server import ControlServer, Request, Route
from backupd.database import DatabaseStatus
from backupd.errors import EXIT_FAILED, ConfigError
from backupd.health import Probe
from backupd.log import configure_logging, get_logger
from backupd.metrics import Metrics, MetricsServer
from backupd.notifications import Notifications
from backupd.private import make_data_private
from backupd.restore.service import DrillService
from backupd.restore_estimate import RestoreBudget
from backupd.sdnotify import Notifier
from backupd.server_settings import SettingRisk, assess
from backupd.service import Service, ServiceContext
from backupd.snapshot.service import SnapshotService
from backupd.status import DaemonInfo, build_status, status_warnings
from backupd.storage import ObjectStore, open_store
from backupd.storage.filestore import FileStore
from backupd.storage.requests import RequestCounts

_log = get_logger("daemon")
# Warnings that repeat what a run's own notification said (snapshot and drill results).
RUN_WARNINGS = ("last snapshot ", "last restore drill ")

RESTART_ONLY_KEYS = (
    "daemon.socket",
    "daemon.socket_group",
    "daemon.admin_group",
    "daemon.socket_request_seconds",
    "daemon.socket_reader_slots",
    "daemon.socket_admin_slots",
    "daemon.socket_max_waits",
    "metrics.listen",
)


def build_services(context: ServiceContext) -> list[Service]:
    """Every feature service, in start order (stopped in reverse)."""
    snapshots, binlog = SnapshotService(context), BinlogService(context)
    budget = RestoreBudget(context, snapshots.request, snapshots.busy, binlog.bytes_since)
    return [snapshots, binlog, DrillService(context), budget]


def control_limits(section: DaemonSection) -> Limits:
    return Limits(
        request_seconds=section.socket_request_seconds,
        reader_slots=section.socket_reader_slots,
        admin_slots=section.socket_admin_slots,
        max_waits=section.socket_max_waits,
    )


def probe_database(config: Config) -> Callable[[], DatabaseStatus]:
    def check() -> DatabaseStatus:
        conn = database.connect(config.mysql)
        try:
            return database.probe(conn)
        finally:
            conn.close()

    return check


def probe_storage(store: ObjectStore) -> Callable[[], None]:
    return store.check


@dataclass
class Flags:
    stop: threading.Event = field(default_factory=threading.Event)
    reload: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.metrics.registry.register(AlertGauges(lambda: self.config))
        self.notifier = notifier or Notifier()
        self.flags = Flags()
        now = time.time()
        self.info = DaemonInfo(started_at=now, config_path=config_path, config_loaded_at=now)
        self.requests = RequestCounts(self.metrics.registry)
        self.store = open_store(config.storage, self.requests.add)
        self.notifications = Notifications(config.notify, self.metrics.registry, self.alarms)
        self.database_probe: Probe[DatabaseStatus] = Probe(
            "database",
            probe_database(config),
            self.metrics,
            self.flags.stop,
            interval=5.0,
            max_backoff=config.mysql.reconnect_max_seconds,
        )
        self.storage_probe: Probe[None] = Probe(
            "storage",
            probe_storage(self.store),
            self.metrics,
            self.flags.stop,
            interval=30.0,
            max_backoff=60.0,
        )
        self.services: list[Service] = build_services(self.context())
        self.control = ControlServer(
            config.daemon.socket,
            self.routes(),
            socket_group=config.daemon.socket_group,
            admin_group=config.daemon.admin_group,
            on_status=lambda status: self.metrics.control_requests.labels(
                f"{status // 100}xx"
            ).inc(),
            limits=control_limits(config.daemon),
        )
        self._export_control_usage()
        self.metrics_server = (
            MetricsServer(config.metrics.listen, self.metrics.registry)
            if config.metrics.listen
            else None
        )
        self._stoppers: list[tuple[str, Callable[[], None]]] = []

    def _export_control_usage(self) -> None:
        """Slot and parked-wait gauges read the control server's counters at scrape time."""
        for role in (Role.ADMIN, Role.READER):
            pool, name = self.control.pools.of(role), ROLE_NAMES[role]
            self.metrics.control_busy.labels(name).set_function(partial(getattr, pool, "busy"))
            self.metrics.control_waiting.labels(name).set_function(
                partial(getattr, pool, "waiting")
            )

    def context(self) -> ServiceContext:
        return ServiceContext(
            self.config,
            self.store,
            self.metrics.registry,
            self.flags.stop,
            self.notifications.publish,
        )

    def alarms(self) -> list[str]:
        """Status warnings to notify about; a failed snapshot or drill run notifies already.
        Only the warnings are built (every few seconds), not the whole status document."""
        warnings = status_warnings(
            self.database_probe.state,
            self.storage_probe.state,
            self._service_warnings(),
            self.assess_settings(),
        )
        return [w for w in warnings if not w.startswith(RUN_WARNINGS)]

    def _service_warnings(self) -> list[str]:
        return [w for service in self.services for w in service.warnings()]

    # -- control API -----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        routes = [
            Route("GET", "/v1/status", self._get_status),
            Route("POST", "/v1/probe", self._post_probe, changes=True),
        ]
        for service in self.services:
            routes += service.routes()
        return routes

    def status(self) -> dict[str, Any]:
        document = build_status(
            self.info,
            self.database_probe.state,
            self.storage_probe.state,
            self.store.url,
            sections={"control": self.control.usage()}
            | {service.name: service.status() for service in self.services},
            extra_warnings=self._service_warnings(),
            risks=self.assess_settings(),
        )
        document["storage"]["requests"] = self.requests.counts()
        return document

    def assess_settings(self) -> list[SettingRisk]:
        """The server's risky settings, weighed against the archive's lag; exported too."""
        state = self.database_probe.state
        if not state.up or state.value is None:
            return []
        risks = assess(state.value, self._archive_lag())
        for risk in risks:
            self.metrics.setting_risk.labels(risk.setting).set(1 if risk.at_risk else 0)
        return risks

    def _archive_lag(self) -> float | None:
        """The recovery point's age alone (this runs every few seconds: no status document)."""
        for service in self.services:
            if isinstance(service, BinlogService) and self.config.binlog.enabled:
                return service.recovery_point_age()
        return None

    def _get_status(self, _request: Request) -> tuple[int, dict[str, Any]]:
        return 200, self.status()

    def _post_probe(self, _request: Request) -> tuple[int, dict[str, Any]]:
        """Probe every dependency now (after fixing one, instead of waiting for the backoff)."""
        self.database_probe.probe_once()
        self.storage_probe.probe_once()
        return 200, self.status()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every component; on failure stop what already started, then re-raise."""
        make_data_private(self.data_directories())
        try:
            self._start("notifications", self.notifications.start, self.notifications.stop)
            self._start("control", self.control.start, self.control.stop)
            if self.metrics_server is not None:
                self._start("metrics", self.metrics_server.start, self.metrics_server.stop)
                self.info = replace(self.info, metrics_address=self.metrics_server.address)
            self._start(
                "database probe", self.database_probe.start, self._join(self.database_probe)
            )
            self._start("storage probe", self.storage_probe.start, self._join(self.storage_probe))
            for service in self.services:
                self._start(service.name, service.start, service.stop)
        except BaseException:
            self.shutdown()
            raise

    def data_directories(self) -> list[str]:
        """What holds backed-up data on this host: state, spool, a file:// repository."""
        daemon = self.config.daemon
        local = [str(self.store.root)] if isinstance(self.store, FileStore) else []
        return [daemon.state_dir, daemon.spool_dir, *local]

    def _join(self, probe: Probe[Any]) -> Callable[[], None]:
        return lambda: probe.join(self.config.daemon.shutdown_timeout_seconds / 4)

    def _start(self, name: str, start: Callable[[], None], stop: Callable[[], None]) -> None:
        start()
        self._stoppers.append((name, stop))

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.flags.stop.set()
        self.flags.wake.set()

    def _on_reload_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.flags.reload = True
        self.flags.wake.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the process exit code."""
        self.install_signal_handlers()
        self.start()
        self.notifier.ready(f"serving on {self.config.daemon.socket}")
        _log.info(
            "backupd ready",
            socket=self.config.daemon.socket,
            metrics=self.config.metrics.listen or "off",
            storage=self.store.url,
        )
        next_watchdog = 0.0
        while not self.flags.stop.is_set():
            next_watchdog = self.cycle(next_watchdog)
        _log.info("stopping")
        self.notifier.stopping()
        self._exit_if_stop_hangs(self.config.daemon.shutdown_timeout_seconds)
        self.shutdown()
        _log.info("stopped")
        return 0

    @staticmethod
    def _exit_if_stop_hangs(timeout: float) -> None:
        """Bound shutdown: a component stuck in its stop must not keep the process alive.

        Frozen filesystems are not this process's to thaw at that point: the freeze watchdog
        process and the unit's ExecStopPost thaw-all do it.
        """

        def force_exit() -> None:
            _log.error("shutdown exceeded its budget; exiting now", timeout_seconds=timeout)
            os._exit(EXIT_FAILED)

        timer = threading.Timer(timeout, force_exit)
        timer.daemon = True
        timer.start()

    def cycle(self, next_watchdog: float) -> float:
        """One main-loop pass: reload if asked, feed the watchdog, sleep until woken."""
        if self.flags.reload:
            self.flags.reload = False
            self.reload()
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval and now >= next_watchdog:
            self.notifier.watchdog()
            next_watchdog = now + interval
        timeout = min(interval, 5.0) if interval else 5.0
        self.assess_settings()  # keeps backupd_server_setting_risk current between scrapes
        self.flags.wake.wait(timeout)
        self.flags.wake.clear()
        return next_watchdog

    def reload(self) -> None:
        """Re-read the config; an invalid one is refused and the running one stays."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            if problems := impossible_combinations(new):
                raise ConfigError(problems)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            _log.error("config reload refused; keeping the running config", problems=exc.problems)
            self.notifier.status("config reload refused; running config kept")
            return
        self.apply(new)
        self.metrics.config_reloads.labels("applied").inc()
        self.notifier.send(READY="1", STATUS="config reloaded")

    def apply(self, new: Config) -> None:
        old, self.config = self.config, new
        for key in RESTART_ONLY_KEYS:
            section, name = key.split(".")
            if getattr(getattr(old, section), name) != getattr(getattr(new, section), name):
                _log.warning("config change needs a restart", key=key)
        configure_logging(new.daemon.log_format, new.daemon.log_level)
        self.store = open_store(new.storage, self.requests.add)
        self.database_probe.max_backoff = new.mysql.reconnect_max_seconds
        self.database_probe.set_check(probe_database(new))
        self.storage_probe.set_check(probe_storage(self.store))
        self.notifications.apply(new.notify)
        for service in self.services:
            service.apply_config(self.context())
        self.info = replace(self.info, config_loaded_at=time.time())
        _log.info("config reloaded", path=self.config_path)

    def shutdown(self) -> None:
        """Stop components in reverse start order; each stop is guarded on its own."""
        self.flags.stop.set()
        while self._stoppers:
            name, stop = self._stoppers.pop()
            try:
                stop()
            except Exception as exc:
                _log.error("component failed to stop", component=name, error=str(exc))
