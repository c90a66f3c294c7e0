"""Scheduled restore drills inside the daemon, and their metrics.

`[drill] enabled = true` runs `drill` on the cron schedule (UTC) against `[drill] target`;
`POST /v1/drill` starts one now. One drill at a time, in its own thread: a drill takes
minutes and must never hold up snapshots or binlog archiving. Exported: when a drill last
passed, how long the last one took, and how many ran by result.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge

from backupd.binlog.archive import cluster_name
from backupd.control.server import Request, Route
from backupd.cron import trigger_for
from backupd.errors import BackupdError, Conflict
from backupd.log import get_logger
from backupd.metrics import PREFIX
from backupd.notifications import Event
from backupd.restore.drill import drill
from backupd.restore.fetcher import fetcher_for
from backupd.restore_estimate import record_phases
from backupd.restore_target import parse_target
from backupd.service import ServiceContext

_log = get_logger("drill")


def drill_event(doc: dict[str, Any]) -> Event:
    """The notification for a finished drill: success -> on_success, else on_failure."""
    error = str(doc.get("error", ""))
    snapshot = doc.get("snapshot")
    set_id = str(snapshot.get("set_id", "")) if isinstance(snapshot, dict) else ""
    message = f"restore drill to {doc['target']} {doc['result']}" + (f": {error}" if error else "")
    return Event(
        "drill",
        str(doc["result"]),
        message,
        set_id=set_id,
        error=error,
        error_code=str(doc.get("error_code", "")),
        extra={"target": str(doc["target"])},
    )


class DrillMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            f"{PREFIX}_drill_last_success_timestamp_seconds",
            "When a restore drill last passed",
            registry=registry,
        )
        self.duration = Gauge(
            f"{PREFIX}_drill_duration_seconds",
            "How long the last restore drill took, start to cleaned up",
            registry=registry,
        )
        self.total = Counter(
            f"{PREFIX}_drills", "Restore drills by result (success, failed)", ["result"],
            registry=registry,
        )  # fmt: skip
        for result in ("success", "failed"):
            self.total.labels(result)


class DrillService:
    name = "drill"

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.metrics = DrillMetrics(context.registry)
        self.scheduler: BackgroundScheduler | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self.last: dict[str, Any] | None = None

    def start(self) -> None:
        section = self.context.config.drill
        if not section.enabled:
            return
        self.scheduler = BackgroundScheduler(timezone=dt.UTC)
        self.scheduler.add_job(
            self.trigger, trigger_for(section.schedule, timezone=section.timezone), id="drill",
            coalesce=True, max_instances=1, misfire_grace_time=3600,
        )  # fmt: skip
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        thread = self._thread
        if thread is not None:  # the drill cleans up in its own finally; give it the budget
            thread.join(self.context.config.daemon.shutdown_timeout_seconds)

    def trigger(self) -> bool:
        """Start a drill in the background; False when one is already running."""
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(target=self.run_once, name="drill", daemon=True)
            self._thread.start()
            return True

    def run_once(self) -> dict[str, Any]:
        config = self.context.config
        started = time.time()
        try:
            result = drill(
                self.context.store,
                parse_target(config.drill.target),
                config.snapshot.local.directory,
                Path(config.daemon.state_dir) / "drill",
                cluster=cluster_name(config.storage),
                fetcher=fetcher_for(config.restore),
            )
            doc = {"result": "success" if result.ok else "failed", **_brief(result.to_dict())}
            if not result.ok:
                doc["error"] = "CHECK TABLE reported problems"
        except BackupdError as exc:
            doc = {"result": "failed", "error": exc.message, "error_code": exc.code}
        except Exception as exc:  # a bug must not kill the daemon: report it as a failed drill
            _log.exception("drill crashed")
            doc = {"result": "failed", "error": repr(exc), "error_code": "internal_error"}
        finished = time.time()
        doc.update(started_at=started, finished_at=finished, target=config.drill.target)
        self.metrics.total.labels(doc["result"]).inc()
        self.metrics.duration.set(finished - started)
        if doc["result"] == "success":
            self.metrics.last_success.set(finished)
            record_phases(config.daemon.state_dir, doc, finished)
        self.last = doc
        _log.info("drill finished", result=doc["result"], error=doc.get("error", ""))
        self.context.notify(drill_event(doc))
        return doc

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/drill", self._post_drill, changes=True),
            Route("GET", "/v1/drill", self._get_drill),
        ]

    def _post_drill(self, _request: Request) -> tuple[int, dict[str, Any]]:
        if not self.trigger():
            raise Conflict(message="a drill is already running")
        return 202, {"state": "running"}

    def _get_drill(self, _request: Request) -> tuple[int, dict[str, Any]]:
        return 200, self.status()

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def status(self) -> dict[str, Any]:
        section = self.context.config.drill
        last = self.last
        if self.running():
            summary = "running"
        elif last is None:
            summary = "no drill since the daemon started"
        else:
            summary = f"last drill {last['result']} to {last['target']}"
        job = self.scheduler.get_job("drill") if self.scheduler is not None else None
        next_run = job.next_run_time.timestamp() if job and job.next_run_time else None
        return {
            "summary": summary,
            "enabled": section.enabled,
            "schedule": section.schedule,
            "timezone": section.timezone,
            "target": section.target,
            "running": self.running(),
            "next_run_at": next_run,
            "last": last,
        }

    def warnings(self) -> list[str]:
        last = self.last
        if last is not None and last["result"] != "success":
            return [f"last restore drill failed: {last.get('error', '')}"]
        return []

    def apply_config(self, context: ServiceContext) -> None:
        if context.config.drill != self.context.config.drill:
            _log.warning("drill settings changed; the schedule applies after a restart")
        self.context = context


def _brief(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("snapshot", "end", "method", "replay", "tables", "seconds", "ready_seconds", "steps")
    return {k: doc[k] for k in keep if k in doc}
