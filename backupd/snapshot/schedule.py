"""When snapshots run: crontab(5) rules (backupd.cron) in the schedule's time zone with
jitter, never two at once, one catch-up run after downtime, and a backed-off retry after a
skipped run. The timing rules are pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from backupd.config import SnapshotSection
from backupd.cron import trigger_for
from backupd.snapshot.catalog import SKIPPED, SnapshotSet
from backupd.snapshot.metrics import SnapshotMetrics

JOB_ID = "snapshot"
RETRY_JOB_ID = "snapshot-retry"
RETRY_BASE_SECONDS = 60.0


__all__ = ["Schedule", "missed_run", "retry_delay", "trigger_for"]


def missed_run(cron: str, last_run_at: float, now: float, timezone: str = "UTC") -> bool:
    """True when a scheduled time passed since the last run (the daemon was down then).

    No run recorded at all is not a miss: a fresh install waits for its schedule.
    """
    if last_run_at <= 0:
        return False
    after = dt.datetime.fromtimestamp(last_run_at, dt.UTC)
    due = trigger_for(cron, timezone=timezone).get_next_fire_time(
        None, after + dt.timedelta(seconds=1)
    )
    return due is not None and due.timestamp() <= now


def retry_delay(skips: int, cap: float) -> float:
    """Backoff after consecutive skipped runs: 60 s, 120 s, 240 s ... at most `cap`."""
    return float(min(cap, RETRY_BASE_SECONDS * 2 ** max(0, skips - 1)))


class Schedule:
    def __init__(
        self, section: SnapshotSection, fire: Callable[[], None], metrics: SnapshotMetrics
    ) -> None:
        self.section = section
        self.fire = fire
        self.skips = 0
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        metrics.next_run.set_function(lambda: self.next_run_at() or 0.0)

    def start(self) -> None:
        self.scheduler.start()
        self._add()

    def _add(self) -> None:
        self.scheduler.add_job(
            self.fire,
            trigger_for(self.section.schedule, self.section.jitter_seconds, self.section.timezone),
            id=JOB_ID,
            replace_existing=True,
        )

    def reschedule(self, section: SnapshotSection) -> None:
        self.section = section
        if not section.enabled:
            self.scheduler.remove_all_jobs()
        else:
            self._add()

    def next_run_at(self) -> float | None:
        times = [job.next_run_time for job in self.scheduler.get_jobs() if job.next_run_time]
        return min(times).timestamp() if times else None

    def _once(self, delay: float) -> None:
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        self.scheduler.add_job(
            self.fire, "date", run_date=when, id=RETRY_JOB_ID, replace_existing=True
        )

    def catch_up(self, last_run_at: float) -> None:
        now = dt.datetime.now(dt.UTC).timestamp()
        if self.section.enabled and missed_run(
            self.section.schedule, last_run_at, now, self.section.timezone
        ):
            self._once(0)

    def after_run(self, record: SnapshotSet) -> None:
        if record.state != SKIPPED:
            self.skips = 0
            return
        self.skips += 1
        self._once(retry_delay(self.skips, cap=3600.0))

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
