"""The binlog archive as a daemon Service: threads, status, warnings, control routes.

Start order: learn the server's identity (retrying while the database is down), upload what
the spool kept from the last run, then stream from the archive's end. A poller compares the
archive with the server once a second for the status, the lag and the recovery point.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from backupd import database
from backupd.binlog import layout
from backupd.binlog.archive import Archive, cluster_name
from backupd.binlog.archiver import Alarms, Archiver, server_logs
from backupd.binlog.compactor import Compactor
from backupd.binlog.continuity import describe_server
from backupd.binlog.index_batcher import IndexBatcher
from backupd.binlog.index_stage import IndexStage
from backupd.binlog.metrics import BinlogMetrics
from backupd.binlog.recent import RecentSegments
from backupd.binlog.refill import refill
from backupd.binlog.spool import Spool, SpoolEntry
from backupd.binlog.state import Progress, StateFile
from backupd.binlog.uploader import Target, Uploader
from backupd.control.server import Request, Route
from backupd.errors import BackupdError
from backupd.log import get_logger
from backupd.service import ServiceContext
from backupd.storage import ObjectStore

_log = get_logger("binlog.service")

POLL_SECONDS = 1.0


def lag_bytes(logs: list[tuple[str, int]], file: str, position: int) -> int | None:
    """Bytes the server has that the archive does not (None when `file` is not listed)."""
    names = [name for name, _ in logs]
    if file not in names:
        return None
    index = names.index(file)
    return max(0, logs[index][1] - position) + sum(size for _, size in logs[index + 1 :])


def with_progress(logs: list[tuple[str, int]], file: str, position: int) -> list[tuple[str, int]]:
    """The server's binlog list as it is at least: the archive has read up to `file`:`position`
    (a list polled earlier is shorter)."""
    names = [name for name, _ in logs]
    if file in names:
        return [(name, max(size, position) if name == file else size) for name, size in logs]
    if file and logs and layout.file_order(file) > layout.file_order(names[-1]):
        return [*logs, (file, position)]
    return logs


class BinlogService:
    name = "binlog"

    def __init__(self, context: ServiceContext) -> None:
        self._context = context
        self.config = context.config
        self.metrics = BinlogMetrics(context.registry)
        self.progress = Progress()
        self.alarms = Alarms()
        self._stop = threading.Event()
        self.state = StateFile(Path(self.config.daemon.state_dir) / "binlog.json")
        self.server = ""
        self.cluster = ""
        self.recent = RecentSegments()  # what compaction need not download again
        self.spool: Spool | None = None
        self.uploader: Uploader | None = None
        self.archiver: Archiver | None = None
        self.compactor: Compactor | None = None
        self.indexing: IndexStage | None = None
        self.batcher: IndexBatcher | None = None
        self._logs: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._main, name="binlog", daemon=True)

    def store(self) -> ObjectStore:
        return self._context.store

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.binlog.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        budget = self.config.daemon.shutdown_timeout_seconds / 3
        for part in (self.archiver, self.indexing, self.uploader, self.batcher, self.compactor):
            if part is not None:
                part.join(budget)
        if self._thread.is_alive():
            self._thread.join(budget)

    def apply_config(self, context: ServiceContext) -> None:
        old = self.config
        self._context = context
        if old.binlog != context.config.binlog or old.mysql != context.config.mysql:
            _log.warning("binlog and mysql settings take effect after a restart")

    def _main(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._begin()
                break
            except BackupdError as exc:
                self.alarms.stream_error = exc.message
                _log.warning("binlog archive cannot start yet", error=exc.message)
            except OSError as exc:  # spool or state directory unusable
                self.alarms.stream_error = f"binlog archive cannot start: {exc}"
                _log.error("binlog archive cannot start", error=str(exc))
            self._stop.wait(delay)
            delay = min(delay * 2, self.config.mysql.reconnect_max_seconds)
        next_check = 0.0
        while not self._stop.wait(POLL_SECONDS):
            self._poll()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.config.binlog.check_seconds
                self._check_chain()

    def _begin(self) -> None:
        conn = database.connect(self.config.mysql)
        try:
            self.server = describe_server(conn)
        finally:
            conn.close()
        binlog = self.config.binlog
        self.cluster = cluster_name(self.config.storage)
        spool_dir = Path(self.config.daemon.spool_dir) / "binlog" / self.cluster
        _adopt_legacy_spool(spool_dir.parent / self.server, spool_dir)
        self.spool = Spool(spool_dir, binlog.spool_max_bytes, self._stop)
        recovered = self.spool.recover()
        self.metrics.watch(self.spool, self.progress)
        stream, unfolded = self._restore_progress()  # before any upload can move it
        # Spooled segments belong to the latest timeline: a new one begins only after the
        # spool is empty (Archiver._branch).
        target = Target(self.store, stream, binlog.compression, binlog.level)
        self.compactor = Compactor(
            target, self._stop, self.recent, binlog.index, binlog.rollup_bytes
        )
        self.uploader = Uploader(
            target,
            self._uploaded,
            self._upload_failed,
            self._stop,
        )
        # Spooled segments go to the uploader and to the change index at once; their
        # indexes wait for the batcher, which hands closed files on to compaction.
        self.batcher = IndexBatcher(
            self.store,
            spool_dir,
            self._stop,
            binlog.index_flush_seconds,
            self.compactor.submit,
            max_bytes=binlog.rollup_bytes // 2,  # two or more make a fold
            stored=self.compactor.stored,  # indexed bytes are ready to fold
        )
        self.indexing = IndexStage(
            self.uploader.submit,
            self.spool.remove,
            lambda: target.stream,
            self.batcher.directory,
            self._stop,
            binlog.index,
            catch_up_seconds=binlog.index_flush_seconds,
            pressure=lambda: self.spool is not None and self.spool.used * 2 > self.spool.max_bytes,
            unindexed=lambda reason: self.metrics.unindexed_segments.labels(reason).inc(),
        )
        self.metrics.index_lag.set_function(self.indexing.lag)
        for entry in recovered:
            self.progress.queued(entry.file, entry.start, entry.end, entry.last_time)
        self.uploader.start()
        self.batcher.start()
        self.indexing.start()
        for entry in recovered:
            self.indexing.submit(entry)
        self.archiver = Archiver(
            self.config.mysql,
            binlog,
            self.store,
            self.cluster,
            target,
            self.spool,
            self.indexing.submit,
            self.progress,
            self.metrics,
            self.alarms,
            self._stop,
        )
        self.compactor.start(unfolded)
        self.archiver.start()
        _log.info("binlog archiving started", server=self.server, recovered=len(recovered))

    def _restore_progress(self) -> tuple[str, list[tuple[str, str]]]:
        """Start the archived coordinate at the latest timeline's end (the spool adds to it).

        Returns that timeline's stream ("" before the first) and the files of every timeline
        still made of several segments (left for compaction or roll-up), newest first."""
        view = Archive(self.store(), self.cluster).read()
        latest = view.latest()
        if latest is None:
            return "", []
        file, position, _kind = latest.end()
        if file:
            self.progress.restore(file, position, latest.last_time())
        self._cross_check(latest.stream, file, position)
        unfolded = [
            (found.stream, name)
            for found in view.timelines.values()
            for name, parts in layout.group_by_file(found.segments).items()
            if len(parts) > 1
        ]
        # the file being written first: it grows, and readers list it most
        newest_first = sorted(
            unfolded,
            key=lambda item: (item[0] == latest.stream, layout.file_order(item[1])),
            reverse=True,
        )
        return latest.stream, newest_first

    def _cross_check(self, stream: str, file: str, position: int) -> None:
        """The state file says how far the last run saw the repository go; holding less now
        means objects were lost after upload (deleted, a bucket restored from an older copy).
        Resume re-archives them while the server has them (else a gap is recorded)."""
        saved = self.state.load()
        if saved.get("stream") != stream or not isinstance(saved.get("file"), str):
            return
        then = (layout.file_order(str(saved["file"])), int(str(saved.get("position", 0))))
        if then > (layout.file_order(file), position):
            lost = f"{file or '(nothing)'}:{position} .. {saved['file']}:{saved['position']}"
            self.alarms.holes = [f"{lost} (stored before, missing from the repository now)"]
            self.metrics.holes.set(1)
            _log.error("binlog objects missing from the repository after upload", range=lost)

    def _uploaded(self, entry: SpoolEntry, key: layout.SegmentKey, object_size: int) -> None:
        assert self.indexing is not None and self.batcher is not None
        with contextlib.suppress(OSError):  # unreadable: compaction downloads it instead
            self.recent.keep(key.raw_sha256, entry.read())  # for compaction: no GET later
        if self.compactor is not None and not self.compactor.index:
            self.compactor.stored(key.stream, key.file, key.size)  # ready to fold
        self.indexing.uploaded(entry)  # leaves the spool once its index is pending too
        self.alarms.upload_error = ""
        if entry.spooled_at and self.archiver is not None:
            self.archiver.upload_took(time.monotonic() - entry.spooled_at)
        self.metrics.archived_bytes.inc(entry.size)
        self.metrics.uploaded_bytes.inc(object_size)
        if self.progress.uploaded(entry.file, entry.start, entry.end):
            for closed in self.progress.take_passed():
                if self.archiver is not None:
                    # every byte of it is stored (on the timeline being written): its
                    # indexes are stored next, then it is compacted
                    stream = self.archiver.target.stream
                    self.indexing.close_file(stream, closed, self.batcher.close_file)
            try:
                stream = self.archiver.target.stream if self.archiver is not None else ""
                self.state.save(stream, self.progress.file, self.progress.position)
            except OSError as exc:  # a hint for operators and benchmarks, not the truth
                _log.warning("cannot write the binlog state file", error=str(exc))

    def _check_chain(self, refill_holes: bool = True) -> None:
        """Find holes anywhere in the current timeline (not only its last file) and read
        them again from the server while it still has their files (then check again)."""
        archiver = self.archiver
        if archiver is None or not archiver.timeline or self.spool is None:
            return
        try:
            latest = archiver.archive().read().get(archiver.timeline)
        except BackupdError as exc:
            _log.warning("binlog chain check failed", error=exc.message)
            return
        done = (layout.file_order(self.progress.file), self.progress.position)
        spooled = {(e.file, e.start) for e in self.spool.entries()}
        holes = [
            h
            for h in latest.holes()
            if (layout.file_order(h.file), h.start) < done and (h.file, h.start) not in spooled
        ]
        self.metrics.holes.set(len(holes))
        self.alarms.holes = [f"{hole} ({hole.why})" for hole in holes]
        sizes = dict(self._logs)
        stored_any = False
        for hole in holes if refill_holes else []:
            if hole.file not in sizes:
                continue  # the server purged it too: the planner refuses to cross the hole
            try:
                stored = refill(self.config.mysql, archiver.target, latest.stream, hole)
            except BackupdError as exc:
                _log.error("cannot re-archive a hole", hole=str(hole), error=exc.message)
                continue
            self.metrics.refilled_bytes.inc(stored)
            stored_any = True
            _log.warning("binlog hole re-archived from the server", hole=str(hole), bytes=stored)
        if stored_any:
            self._check_chain(refill_holes=False)

    def _upload_failed(self, message: str) -> None:
        self.alarms.upload_error = message
        self.metrics.upload_errors.inc()

    def _poll(self) -> None:
        """Compare with the server: lag, and 'caught up' time for the recovery point."""
        asked_at = time.time()
        try:
            self._logs = server_logs(self.config.mysql)
        except BackupdError:
            return
        lag = lag_bytes(self._logs, self.progress.file, self.progress.position)
        if lag == 0 and self.progress.pending == 0:
            self.progress.caught_up_at = asked_at

    def bytes_since(self, coordinate: str, timeline: int) -> int | None:
        """Bytes archived after `coordinate` ("file:pos") of the timeline being written, from
        the server's binlog list (no repository request); None when it cannot say: another
        timeline, or the file is no longer on the server."""
        file, _, position = coordinate.rpartition(":")
        archiver = self.archiver
        if archiver is None or not position.isdigit() or timeline != archiver.timeline:
            return None
        # the list is polled once a second: the archive may have passed it since
        logs = with_progress(self._logs, self.progress.file, self.progress.position)
        since = lag_bytes(logs, file, int(position))
        unarchived = lag_bytes(logs, self.progress.file, self.progress.position)
        return None if since is None or unarchived is None else max(0, since - unarchived)

    # -- status ----------------------------------------------------------------------------

    def recovery_point_age(self) -> float | None:
        """Seconds since the newest archived transaction committed (None: nothing yet)."""
        point = self.progress.recovery_point()
        return round(max(0.0, time.time() - point), 3) if point else None

    def status(self) -> dict[str, Any]:
        enabled = self.config.binlog.enabled
        logs = self._logs
        server_coordinate = f"{logs[-1][0]}:{logs[-1][1]}" if logs else None
        lag = lag_bytes(logs, self.progress.file, self.progress.position) if logs else None
        point = self.progress.recovery_point()
        age = self.recovery_point_age()
        spool_used = self.spool.used if self.spool else 0
        doc: dict[str, Any] = {
            "enabled": enabled,
            "server": self.server or None,
            "cluster": self.cluster or None,
            "timeline": (self.archiver.timeline or None) if self.archiver else None,
            "timeline_note": self.alarms.timeline or None,
            "streaming": bool(self.archiver and self.archiver.connected),
            "server_coordinate": server_coordinate,
            "archived_coordinate": self.progress.coordinate() or None,
            "recovery_point": point or None,
            "recovery_point_age_seconds": age,
            "lag_bytes": lag,
            "spool_bytes": spool_used,
            "spool_max_bytes": self.config.binlog.spool_max_bytes,
            "spool_full": bool(self.spool and self.spool.full),
            "upload_backlog": self.uploader.backlog if self.uploader else 0,
            "index_lag_seconds": round(self.indexing.lag(), 3) if self.indexing else 0.0,
            "gaps": list(self.alarms.gaps),
            "holes": list(self.alarms.holes),
            "error": self.alarms.stream_error
            or self.alarms.spool_error
            or self.alarms.upload_error
            or None,
        }
        doc["summary"] = self._summary(doc)
        return doc

    def _summary(self, doc: dict[str, Any]) -> str:
        if not doc["enabled"]:
            return "binlog archiving disabled"
        if doc["archived_coordinate"] is None:
            return "binlog archiving starting"
        age = doc["recovery_point_age_seconds"]
        age_text = f"{age:.1f}s" if age is not None else "unknown"
        server = doc["server_coordinate"] or "not polled yet"
        return (
            f"archived to {doc['archived_coordinate']} (server {server}), "
            f"recovery point {age_text} old, spool {doc['spool_bytes']} bytes"
        )

    def warnings(self) -> list[str]:
        if not self.config.binlog.enabled:
            return []
        found = [f"binlog gap (purged before archived): {gap}" for gap in self.alarms.gaps]
        found += [f"binlog archive hole: {hole}" for hole in self.alarms.holes]
        if self.alarms.stream_error:
            found.append(f"binlog stream: {self.alarms.stream_error}")
        if self.alarms.upload_error:
            found.append(f"binlog upload failing (spooling locally): {self.alarms.upload_error}")
        if self.alarms.spool_error:
            found.append(f"binlog spool: {self.alarms.spool_error}")
        if self.spool is not None and self.spool.full:
            found.append("binlog spool full: reading from the server is paused")
        return found

    def routes(self) -> list[Route]:
        return [Route("GET", "/v1/binlog/status", self._get_status)]

    def _get_status(self, _request: Request) -> tuple[int, dict[str, Any]]:
        return 200, {"healthy": not self.warnings(), "warnings": self.warnings(), **self.status()}


def _adopt_legacy_spool(old: Path, new: Path) -> None:
    """Segments spooled by a version that kept the spool per server identity move to the
    cluster's spool (same filesystem: renames), so they are uploaded, not forgotten."""
    if old == new or not old.is_dir():
        return
    new.mkdir(parents=True, exist_ok=True)
    for path in old.iterdir():
        path.rename(new / path.name)
    old.rmdir()
