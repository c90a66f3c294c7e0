"""Scheduled restore drills inside the daemon, and their metrics.

`[drill] enabled = true` runs `drill` on the cron schedule (UTC) against `[drill] target`;
`POST /v1/drill` starts one now (`backupctl drill` asks for it when the daemon runs, so its
result lands in these metrics). At start, what a drill killed mid-way left (volumes,
attachments, mounts, loop devices, scratch server) is removed in a background thread that
the first drill waits for. One drill at a time, in its own thread: a drill takes minutes and
must never hold up snapshots or binlog archiving. Exported: when a drill last passed, how
long the last one took, and how many ran by result.
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
from backupd.errors import BackupdError, Conflict, UsageError
from backupd.log import get_logger
from backupd.metrics import PREFIX
from backupd.notifications import Event
from backupd.restore.drill import DrillOptions
from backupd.restore.drill_run import clean_leftovers, run_drill
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
        self.drills = 0  # drill ids handed out since start: POST answers one, `last` has it
        self._cleaning: threading.Thread | None = None  # the start's clean-up; drills wait

    @property
    def directory(self) -> Path:
        """Work directory and resource record of the daemon's drills."""
        return Path(self.context.config.daemon.state_dir) / "drill"

    def start(self) -> None:
        self._cleaning = threading.Thread(target=self.clean_leftovers, name="drill-clean-up")
        self._cleaning.daemon = True
        self._cleaning.start()
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

    def clean_leftovers(self) -> None:
        """Remove what a drill killed with an earlier daemon left behind."""
        try:
            removed = clean_leftovers(self.context.config, self.directory)
        except Exception as exc:  # the next drill tries again before it starts
            _log.warning("cleaning up after an earlier drill failed", error=str(exc))
            return
        if removed:
            _log.warning("removed what an earlier drill left", removed="; ".join(removed))

    def trigger(self, request: dict[str, Any] | None = None) -> int:
        """Start a drill in the background; its id, or 0 when one is already running."""
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                return 0
            self.drills += 1
            self._thread = threading.Thread(
                target=self.run_once, args=(request or {}, self.drills), name="drill", daemon=True
            )
            self._thread.start()
            return self.drills

    def run_once(self, request: dict[str, Any] | None = None, drill_id: int = 0) -> dict[str, Any]:
        if self._cleaning is not None:
            self._cleaning.join()  # both take the drill lock: the clean-up goes first
        config = self.context.config
        request = request or {}
        target = str(request.get("target") or config.drill.target)
        started = time.time()
        try:
            options = DrillOptions(
                server=request.get("server") or None,
                cluster=str(request.get("cluster") or cluster_name(config.storage)),
                timeline=request.get("timeline"),
                fetcher=fetcher_for(config.restore),
            )
            result = run_drill(
                config, self.context.store, parse_target(target), self.directory,
                self.directory, options,
            )  # fmt: skip
            doc = {"result": "success" if result.ok else "failed", **_brief(result.to_dict())}
            if not result.ok:
                doc["error"] = "CHECK TABLE reported problems"
        except BackupdError as exc:
            doc = {"result": "failed", "error": exc.message, "error_code": exc.code}
        except Exception as exc:  # a bug must not kill the daemon: report it as a failed drill
            _log.exception("drill crashed")
            doc = {"result": "failed", "error": repr(exc), "error_code": "internal_error"}
        finished = time.time()
        doc.update(started_at=started, finished_at=finished, target=target, drill_id=drill_id)
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

    def _post_drill(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = drill_request(request.body)
        drill_id = self.trigger(body)
        if not drill_id:
            raise Conflict(message="a drill is already running")
        return 202, {"state": "running", "drill_id": drill_id}

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


def drill_request(body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/drill's optional body: target, server, cluster, timeline (checked here)."""
    unknown = set(body) - {"target", "server", "cluster", "timeline"}
    if unknown:
        raise UsageError(f"unknown drill option(s): {', '.join(sorted(unknown))}")
    if body.get("target"):
        parse_target(str(body["target"]))  # UsageError (400) naming what is expected
    timeline = body.get("timeline")
    if timeline is not None and (not isinstance(timeline, int) or isinstance(timeline, bool)):
        raise UsageError("timeline must be an integer")
    return {k: v for k, v in body.items() if v not in (None, "")}


def _brief(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("snapshot", "end", "method", "replay", "tables", "seconds", "ready_seconds", "steps")
    return {k: doc[k] for k in keep if k in doc}
