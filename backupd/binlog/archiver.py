"""The reader: resume where the archive stands, stream, cut, spool, hand to the uploader.

One thread. Network errors, server restarts and kills end the dump; it reconnects with
backoff and continues from its own position (kept across reconnects), so nothing is read
twice. An event that fails its checks stops archiving with an alarm; it is retried from the
durable position after a backoff, and bad bytes never reach the spool.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymysql

from backupd import database
from backupd.binlog import layout
from backupd.binlog.client import BinlogStream, ServerError, StreamEnded
from backupd.binlog.events import EventError
from backupd.binlog.metrics import BinlogMetrics
from backupd.binlog.segmenter import Segment, Segmenter
from backupd.binlog.source import BinlogSource
from backupd.binlog.spool import Spool, SpoolEntry
from backupd.binlog.state import Progress, resume_point
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
        server: str,
        spool: Spool,
        submit: Callable[[SpoolEntry], bool],
        progress: Progress,
        metrics: BinlogMetrics,
        alarms: Alarms,
        stop: threading.Event,
        connect: Callable[[MysqlSection], BinlogSource] = BinlogStream.connect,
    ) -> None:
        self.mysql = mysql
        self._connect = connect
        self.binlog = binlog
        self._store = store
        self.server = server
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
        """Where to stream from: the end of repository + spool, checked against the server's
        binary logs (`logs`)."""
        self._drain()
        # The spool first: an entry gone by the time the repository is listed was uploaded
        # before it was removed, so one of the two listings always shows it.
        archived = [(e.file, e.start, e.end, e.kind) for e in self.spool.entries()]
        for info in self._store().list(layout.server_prefix(self.server)):
            seg = layout.parse_segment(info.key)
            if seg is not None:
                archived.append((seg.file, seg.start, seg.end, seg.kind))
        resume = resume_point(self.server, archived, logs)
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


def describe_server(conn: Any) -> str:
    """The server identity used in keys: server_uuid on MySQL, server_id on MariaDB."""
    try:
        version = database.server_version(conn)
        variable = database.identity_variable(version)
        row = database.query_one(conn, f"SELECT @@GLOBAL.{variable} AS ident")
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailable(message=database.describe(exc)) from exc
    return str(row["ident"]) if row else "unknown"
