"""The binlog archive's metrics, named exactly as docs/INTERFACE.md lists them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from backupd.binlog.spool import Spool
from backupd.binlog.state import Progress
from backupd.metrics import PREFIX

# Why a segment has no change index: it could not be read, the worker was unavailable or
# died, or the spool filled while it waited for idle CPU time.
UNINDEXED_REASONS = ("failed", "worker", "spool_pressure")


class BinlogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.last_archived_event_timestamp = Gauge(
            f"{PREFIX}_binlog_last_archived_event_timestamp_seconds",
            "Everything committed up to this time is in the repository (recovery point)",
            registry=r,
        )
        self.archived_bytes = Counter(
            f"{PREFIX}_binlog_archived_bytes",
            "Binlog bytes stored in the repository (before compression)",
            registry=r,
        )
        self.uploaded_bytes = Counter(
            f"{PREFIX}_binlog_uploaded_bytes",
            "Object bytes uploaded to the repository (after compression)",
            registry=r,
        )
        self.spool_bytes = Gauge(
            f"{PREFIX}_binlog_spool_bytes", "Binlog bytes in the local spool", registry=r
        )
        self.gaps = Counter(
            f"{PREFIX}_binlog_gaps",
            "Binlog ranges purged by the server before they were archived",
            registry=r,
        )
        self.reconnects = Counter(
            f"{PREFIX}_binlog_reconnects", "Replication connections opened again", registry=r
        )
        self.upload_errors = Counter(
            f"{PREFIX}_upload_errors", "Failed uploads to the repository (retried)", registry=r
        )
        self.spool_full = Gauge(
            f"{PREFIX}_binlog_spool_full",
            "1 while reading from the server is paused because the spool is full",
            registry=r,
        )

        self.timeline = Gauge(
            f"{PREFIX}_binlog_timeline",
            "Id of the archive timeline being written (changes on reset, failover, rewind)",
            registry=r,
        )
        self.timeline_switches = Counter(
            f"{PREFIX}_binlog_timeline_switches",
            "New timelines begun because continuity with the archive broke, by reason",
            ["reason"],
            registry=r,
        )

        self.holes = Gauge(
            f"{PREFIX}_binlog_archive_holes",
            "Ranges missing inside the current timeline's archived chain (last check)",
            registry=r,
        )
        self.refilled_bytes = Counter(
            f"{PREFIX}_binlog_refilled_bytes",
            "Bytes of archive holes read again from the server and stored",
            registry=r,
        )

        self.index_lag = Gauge(
            f"{PREFIX}_binlog_index_lag_seconds",
            "How long the oldest archived segment has waited for its change index (0: none)",
            registry=r,
        )
        self.unindexed_segments = Counter(
            f"{PREFIX}_binlog_unindexed_segments",
            "Archived segments left without a change index (backupctl binlog index), by reason",
            ["reason"],
            registry=r,
        )
        for reason in UNINDEXED_REASONS:
            self.unindexed_segments.labels(reason)

    def watch(self, spool: Spool, progress: Progress) -> None:
        """Gauges read live at scrape time (never stale between updates)."""
        self.spool_bytes.set_function(lambda: spool.used)
        self.spool_full.set_function(lambda: 1 if spool.full else 0)
        self.last_archived_event_timestamp.set_function(progress.recovery_point)
