"""The snapshot metrics of INTERFACE.md, on the daemon's injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backupd.errors import ThawFailed
from backupd.metrics import PREFIX
from backupd.snapshot.catalog import COMPLETED, FAILED, PENDING, SnapshotSet

_SHORT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LONG = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)


def _counter(
    registry: CollectorRegistry, name: str, doc: str, label: str, values: tuple[str, ...]
) -> Counter:
    """A counter with one label whose every value is exported from the start (as 0)."""
    counter = Counter(f"{PREFIX}_{name}", doc, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


class SnapshotMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            f"{PREFIX}_snapshot_last_success_timestamp_seconds",
            "When the last snapshot set completed",
            registry=registry,
        )
        self.next_run = Gauge(
            f"{PREFIX}_snapshot_next_run_timestamp_seconds",
            "When the next scheduled snapshot run is due (0: none scheduled)",
            registry=registry,
        )
        self.total = _counter(
            registry,
            "snapshots",
            "Snapshot runs by result (completed, failed, skipped)",
            "result",
            ("completed", "failed", "skipped"),
        )
        self.duration = Histogram(
            f"{PREFIX}_snapshot_duration_seconds",
            "Whole snapshot run, start to recorded",
            buckets=_LONG,
            registry=registry,
        )
        self.freeze = Histogram(
            f"{PREFIX}_freeze_duration_seconds",
            "How long filesystems stayed frozen",
            buckets=_SHORT,
            registry=registry,
        )
        self.lock = Histogram(
            f"{PREFIX}_lock_duration_seconds",
            "How long commits stayed blocked",
            buckets=_SHORT,
            registry=registry,
        )
        self.lock_deadline_exceeded = Counter(
            f"{PREFIX}_snapshot_lock_deadline_exceeded",
            "Locked sections cut off at max_freeze_seconds (thawed, unlocked, set discarded)",
            registry=registry,
        )
        self.lock_retries = Counter(
            f"{PREFIX}_snapshot_lock_retries",
            "Locked sections retried with a fresh lock (snapshot.lock_attempts)",
            registry=registry,
        )

        self.prune_refused = _counter(
            registry,
            "prune_refused",
            "Prune runs (dry runs too) that deleted nothing because the repository listing "
            "was incomplete, by reason",
            "reason",
            ("unreadable_manifest", "listing_error", "unparsable_object"),
        )
        self.prune_blocked = Gauge(
            f"{PREFIX}_prune_blocked",
            "1 while the latest prune (or dry run) was refused: retention is not running",
            registry=registry,
        )
        self.pending = Gauge(
            f"{PREFIX}_snapshot_pending_sets",
            "Snapshot sets started but not yet completed by the provider (followed up)",
            registry=registry,
        )
        self.thaw_failures = Counter(
            f"{PREFIX}_thaw_failures",
            "Runs whose FITHAW failed (by the daemon or its watchdog): a mount may be frozen",
            registry=registry,
        )

    def observe(self, record: SnapshotSet) -> None:
        """A run that ended: its lock and freeze, and its outcome unless still pending."""
        if record.error_code == ThawFailed.code:
            self.thaw_failures.inc()
        if record.freeze_seconds:
            self.freeze.observe(record.freeze_seconds)
        if record.lock_seconds:
            self.lock.observe(record.lock_seconds)
        if record.state != PENDING:
            self.outcome(record)

    def outcome(self, record: SnapshotSet) -> None:
        """A set reached its final state (at the end of its run, or when followed up)."""
        self.total.labels(record.state).inc()
        if record.completed_at and record.started_at:
            self.duration.observe(record.completed_at - record.started_at)
        if record.state == COMPLETED:
            self.last_success.set(record.completed_at)
        codes = [error.split(":", 1)[0] for error in record.attempt_errors]
        if record.state == FAILED:
            codes.append(record.error_code)
        self.lock_deadline_exceeded.inc(codes.count("lock_deadline_exceeded"))
        self.lock_retries.inc(len(record.attempt_errors))
