"""The reader: resume where the archive stands, stream, cut, spool, hand to the uploader.

One thread. Network errors, server restarts and kills end the dump; it reconnects with
backoff and continues from its own position (kept across reconnects), so nothing is read
twice. Whenever the position must be found again it first checks continuity with the
archive's latest timeline (`backupd.binlog.timeline`) and, when it broke, begins a new
timeline once everything spooled for the old one is uploaded. An event that fails its checks
stops archiving with an alarm; it is retried from the durable position after a backoff, and
bad bytes never reach the spool.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pymysql

from backupd import database
from backupd.binlog import continuity, fetch, layout, timeline
from backupd.binlog.archive import Archive, ArchiveView, History, Timeline
from backupd.binlog.client import BinlogStream, ServerError, StreamEnded
from backupd.binlog.events import EventError
from backupd.binlog.metrics import BinlogMetrics
from backupd.binlog.segmenter import Segment, Segmenter
from backupd.binlog.source import BinlogSource
from backupd.binlog.spool import Spool, SpoolEntry
from backupd.binlog.state import Progress, resume_point
from backupd.binlog.uploader import Target
from backupd.config import BinlogSection, MysqlSection
from backupd.errors import BackupdError, DatabaseUnavailable
from backupd.log import get_logger
from backupd.storage import ObjectStore

_log = get_logger("binlog.archiver")


@dataclass
class Alarms:
    """What makes `binlog status` unhealthy right now (thread-safe enough: whole-value sets)."""

    stream_error: str = ""
    upload_error: str = ""
    spool_error: str = ""
    gaps: list[str] = field(default_factory=list)
    holes: list[str] = field(default_factory=list)  # found by the last chain check
    timeline: str = ""  # the latest new timeline's reason, until a snapshot is taken on it


def server_logs(section: MysqlSection) -> list[tuple[str, int]]:
    """SHOW BINARY LOGS as (file, size); DatabaseUnavailable on any failure."""
    conn = database.connect(section)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW BINARY LOGS")
            return [(str(row[0]), int(row[1])) for row in cursor.fetchall()]
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailable(message=database.describe(exc)) from exc
    finally:
        conn.close()


class Archiver:
    def __init__(
        self,
        mysql: MysqlSection,
        binlog: BinlogSection,
        store: Callable[[], ObjectStore],
        cluster: str,
        target: Target,
        spool: Spool,
        submit: Callable[[SpoolEntry], bool],
        progress: Progress,
        metrics: BinlogMetrics,
        alarms: Alarms,
        stop: threading.Event,
        connect: Callable[[MysqlSection], BinlogSource] = BinlogStream.connect,
        probe: continuity.ServerProbe | None = None,
    ) -> None:
        self.mysql = mysql
        self._connect = connect
        self.probe = probe or continuity.MysqlProbe(mysql)
        self.binlog = binlog
        self._store = store
        self.cluster = cluster
        self.target = target  # its stream is the timeline being written
        self.timeline = 0
        self.identity = ""
        self._archive: Archive | None = None
        self.spool = spool
        self._submit = submit
        self.progress = progress
        self.metrics = metrics
        self.alarms = alarms
        self._stop = stop
        self.segmenter: Segmenter | None = None
        self.connected = False
        self.latency = 0.0  # seconds from spool to repository (moving average)
        self._gaps_recorded: set[str] = set()
        self._thread = threading.Thread(target=self.run, name="binlog-reader", daemon=True)
        # Cut segments go to the spool writer through a short queue, so the reader keeps
        # reading while a segment is fsynced; memory stays bounded by the queue.
        self._cuts: queue.Queue[Segment] = queue.Queue(2)
        self._spooler = threading.Thread(target=self._write_spool, name="binlog-spool", daemon=True)

    def start(self) -> None:
        self._spooler.start()
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._spooler.join(timeout)

    def run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._stream_once()
                delay = 0.2
            except (StreamEnded, DatabaseUnavailable) as exc:
                _log.info("binlog stream ended; reconnecting", reason=str(exc), retry_in=delay)
            except ServerError as exc:
                _log.warning("server refused the binlog dump", error=str(exc))
                self.alarms.stream_error = f"server refused the binlog dump: {exc}"
                self.segmenter = None  # re-resolve the position (purged file -> gap)
            except EventError as exc:
                _log.error("binlog event rejected; nothing archived past it", error=str(exc))
                self.alarms.stream_error = f"binlog event rejected: {exc}"
                self.segmenter = None
                delay = max(delay, 5.0)
            except BackupdError as exc:
                _log.warning("binlog archiving paused", error=exc.message)
                self.alarms.stream_error = exc.message
            except Exception as exc:  # a bug must not end archiving for good: alarm, retry
                _log.exception("binlog reader failed; retrying from the durable position")
                self.alarms.stream_error = f"binlog reader failed: {exc!r}"
                self.segmenter = None
                delay = max(delay, 5.0)
            self.connected = False
            if self._stop.wait(delay):
                break
            self.metrics.reconnects.inc()
            delay = min(delay * 2, self.mysql.reconnect_max_seconds)

    def _resolve(self, logs: list[tuple[str, int]]) -> Segmenter:
        """Where to stream from: the end of repository + spool on the latest timeline (a new
        one when continuity broke), checked against the server's binary logs (`logs`)."""
        self._drain()
        self.identity = self.probe.identity()
        archive = self.archive()
        # The spool first: an entry gone by the time the repository is listed was uploaded
        # before it was removed, so one of the two listings always shows it.
        spooled = self.spool.entries()
        view = archive.read()
        latest = view.latest() or self._first_timeline(archive, view)
        pending = [_as_key(latest.stream, e) for e in spooled]
        end = continuity.archive_end(latest, pending)
        head = self._archived_head(latest, pending, end)
        server = self.probe.view(self.identity, logs, end, head)
        decision = timeline.decide(end, server)
        start_file = ""
        if decision.branch:
            latest, start_file = self._branch(archive, view, latest, end, decision, server)
            pending = []
        self.target.stream, self.timeline = latest.stream, latest.id
        self.metrics.timeline.set(latest.id)
        archived = latest.segments + pending
        later = [log for log in logs if layout.file_order(log[0]) >= layout.file_order(start_file)]
        resume = resume_point(latest.stream, archived, later if start_file else logs)
        if resume.gap is not None:
            self._record_gap(resume.gap)
        _log.info("binlog stream resumes", file=resume.file, position=resume.position)
        return Segmenter(
            resume.file,
            resume.position,
            self._flush_seconds(),
            self.binlog.segment_max_bytes,
            resume.inside_transaction,
        )

    def archive(self) -> Archive:
        """The cluster's archive reader, kept while the repository stays the same (a reload
        may replace it): history objects are fetched once."""
        store = self._store()
        if self._archive is None or self._archive.store is not store:
            self._archive = Archive(store, self.cluster)
        return self._archive

    def _first_timeline(self, archive: Archive, view: ArchiveView) -> Timeline:
        """Timeline 1: adopts this server's archive from before timelines, if there is one."""
        if self._has_legacy_archive(archive):
            history = History(
                timeline=1,
                stream=self.identity,
                reason="migration",
                identity=self.identity,
                created_at=round(time.time(), 3),
                why=f"adopted the archive written before timelines under binlog/{self.identity}/",
            )
        else:
            history = archive.new_history(view, "start", self.identity)
        archive.begin(history)
        _log.info("binlog timeline begins", timeline=1, reason=history.reason)
        return archive.read().get(1)

    def _has_legacy_archive(self, archive: Archive) -> bool:
        """Segments under `binlog/<server identity>/` (written before timelines): one LIST
        of that prefix, not of every cluster's archive."""
        prefix = layout.stream_prefix(self.identity)
        return any(
            (seg := layout.parse_segment(info.key)) is not None and seg.stream == self.identity
            for info in archive.store.list(prefix)
        )

    def _archived_head(
        self, latest: Timeline, pending: list[layout.SegmentKey], end: timeline.ArchiveEnd
    ) -> bytes | None:
        """The archive's first bytes of its last file (None for a closed file: sizes tell)."""
        if not end.file or end.closed:
            return None
        spooled = {(e.file, e.start): e for e in self.spool.entries()}
        first = spooled.get((end.file, 0))
        if first is not None:
            return first.read()[: continuity.HEAD_BYTES]
        found = layout.chain(s for s in latest.segments if s.file == end.file)
        if found is None or not found.segments:
            return None
        return fetch.load_segment(self._store(), found.segments[0])[: continuity.HEAD_BYTES]

    def _branch(
        self,
        archive: Archive,
        view: ArchiveView,
        parent: Timeline,
        end: timeline.ArchiveEnd,
        decision: timeline.Decision,
        server: timeline.ServerView,
    ) -> tuple[Timeline, str]:
        """Begin a new timeline once the old one's spooled segments are stored; returns it
        and the server file its stream starts in ("" = the oldest the server has)."""
        self._wait_spool_empty()
        child_start, start_file = "", ""
        if decision.parent_end:
            child_start = self.probe.locate_after(server.logs, end.gtid)
            start_file = child_start.rpartition(":")[0]
        elif end.file in dict(server.logs):
            start_file = end.file
        history = archive.new_history(
            view,
            decision.reason,
            self.identity,
            parent=parent.id,
            parent_end=decision.parent_end if child_start else "",
            child_start=child_start,
            gtid=server.gtid_text,
            why=decision.why,
        )
        archive.begin(history)
        self.alarms.timeline = (
            f"timeline {history.timeline} began ({decision.reason}: {decision.why})"
            + ("" if history.crossable else "; take a snapshot: no plan can cross into it")
        )
        self.metrics.timeline_switches.labels(reason=decision.reason).inc()
        _log.warning(
            "binlog timeline begins",
            timeline=history.timeline,
            parent=parent.id,
            reason=decision.reason,
            why=decision.why,
            crossable=history.crossable,
        )
        return Timeline(history), start_file

    def _wait_spool_empty(self) -> None:
        """Objects of two timelines never mix: the old one's segments are stored first."""
        while self.spool.entries():
            if self._stop.wait(0.2):
                raise StreamEnded("stopping before the new timeline began")

    def _record_gap(self, gap: layout.GapKey) -> None:
        if gap.key in self._gaps_recorded:
            return  # the same purge seen again on a reconnect before anything new landed
        body = {
            "from_file": gap.from_file,
            "from_pos": gap.from_pos,
            "to_file": gap.to_file,
            "to_pos": gap.to_pos,
            "detected_at": round(time.time(), 3),
            "reason": "purged by the server before it was archived",
        }
        self._store().put(gap.key, json.dumps(body).encode())
        text = f"{gap.from_file}:{gap.from_pos} .. {gap.to_file}:{gap.to_pos}"
        self.alarms.gaps.append(text)
        self.metrics.gaps.inc()
        self._gaps_recorded.add(gap.key)
        _log.error("binlog gap: the server purged binlogs before they were archived", gap=text)

    def _stream_once(self) -> None:
        stream = self._connect(self.mysql)
        try:
            if self.segmenter is None:
                self.segmenter = self._resolve(stream.binary_logs())
            seg = self.segmenter
            seg.checksum_alg = stream.checksum_alg  # the artificial ROTATE precedes any FDE
            heartbeat = min(self.binlog.heartbeat_seconds, self.binlog.flush_seconds)
            stream.dump(self.mysql.server_id, seg.file, seg.position, heartbeat)
            self.connected = True
            self.alarms.stream_error = ""
            silent_limit = max(self.binlog.heartbeat_seconds * 3, 5.0)
            last_data = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                buffer, offset, sequence = stream.buffered()
                end, sequence, cut = seg.feed_packets(buffer, offset, sequence, now)
                if end != offset:  # the hot path took a run of events from the buffer
                    stream.consumed(end, sequence)
                    last_data = now
                else:  # one event the hot path left (or none yet): the ordinary path
                    event = stream.next_event(self._wait(seg, now))
                    now = time.monotonic()
                    if event is None:
                        if now - last_data > silent_limit:
                            raise StreamEnded(f"no data or heartbeat for {silent_limit:.0f}s")
                        cut = seg.tick(now)
                    else:
                        last_data = now
                        cut = seg.feed_many([event], now)
                for segment in cut:
                    self._spool(segment)
        finally:
            stream.close()

    def _wait(self, seg: Segmenter, now: float) -> float:
        """Until the next time cut is due, so segments leave on time; at most 0.5 s."""
        due = seg.due_in(now)
        return 0.5 if due is None else min(0.5, max(due, 0.001))

    def upload_took(self, seconds: float) -> None:
        """Spool-to-repository latency of a segment: cut earlier by that much, so the
        recovery point stays within flush_seconds (never below half of it)."""
        self.latency = 0.8 * self.latency + 0.2 * seconds
        if self.segmenter is not None:
            self.segmenter.flush_seconds = self._flush_seconds()

    def _flush_seconds(self) -> float:
        flush = self.binlog.flush_seconds
        return max(flush / 2, flush - self.latency)

    def _spool(self, segment: Segment) -> None:
        """Hand a segment to the spool writer (waits while it is behind)."""
        while not self._stop.is_set():
            try:
                self._cuts.put(segment, timeout=0.5)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        """Wait until every cut segment is in the spool (so the spool shows the real end)."""
        with self._cuts.all_tasks_done:
            while self._cuts.unfinished_tasks and not self._stop.is_set():
                self._cuts.all_tasks_done.wait(0.5)

    def _write_spool(self) -> None:
        while True:
            try:
                segment = self._cuts.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set() and not self._thread.is_alive():
                    return
                continue
            try:
                if not self._store_segment(segment):
                    return
            finally:
                self._cuts.task_done()

    def _store_segment(self, segment: Segment) -> bool:
        """Spool one segment, retrying while the disk refuses (full, read-only): never drop."""
        delay = 0.5
        while True:
            try:
                entry = self.spool.write(segment)
                break
            except OSError as exc:
                self.alarms.spool_error = f"cannot write the spool: {exc}"
                _log.error("spool write failed; retrying", error=str(exc), retry_in=delay)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)
        self.alarms.spool_error = ""
        if entry is None:
            return False  # stopping; the server still has these bytes
        self.progress.queued(entry.file, entry.start, entry.end, entry.last_time)
        self._submit(entry)
        return True


def _as_key(stream: str, entry: SpoolEntry) -> layout.SegmentKey:
    """A spooled segment as the key it will have (checksums unknown until it is encoded)."""
    return layout.SegmentKey(stream, entry.extent, "", "", "bin")
