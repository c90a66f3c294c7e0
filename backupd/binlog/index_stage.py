"""The change index written while archiving: a stage beside the uploader.

Each spooled segment goes to the uploader at once and, in the same order, to one worker
process that indexes it (`change_index`). The index is written durably to the batcher's
pending directory (`index_batcher`), which stores the indexes of consecutive segments as
one object. A spool entry is removed only when both are done: its segment is stored and its
index is pending. So an index is as durable as its segment (a crash leaves the entry in the
spool: uploaded again to the same key, indexed again to the same bytes) and no index
covers a segment that is not stored, while the upload (and so the recovery point and the
archiver's pace) never waits for the index.

Why a process (`index_worker`): counting rows walks every row in Python, and in the daemon's
process that would take the interpreter lock from the reader thread. The worker runs on idle
CPU time only (`index_priority`: lifted to nice 10 when it falls a flush interval behind),
so the reader, the server and the compressors go first; when the spool is more than half
full, the oldest stored segment stops waiting for its index (the worker is restarted and the
segment left to the backfill), so the index can never make the reader wait for spool space.
Its state (checksum setting, table maps, the open transaction of a `mid` segment) lives in
it, and it sees the segments in order, one at a time. A segment that cannot be indexed (or
a worker that died) is left unindexed with a warning: `backupctl binlog index` fills it in
later. A file is handed on as closed (to the batcher, then compaction) only after its
segments' indexes are pending.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backupd.binlog.index_batcher import pending_name
from backupd.binlog.index_priority import WorkerPriority
from backupd.binlog.index_worker import IndexFailed, IndexWorker, WorkerGone
from backupd.binlog.spool import SpoolEntry
from backupd.durable import write_file
from backupd.log import get_logger

_log = get_logger("binlog.index")

_POLL_SECONDS = 0.05  # how often a wait for an index looks at stop, lag and the spool


@dataclass
class _Tracked:
    """A spool entry between the spool writer and its removal."""

    entry: SpoolEntry
    stream: str
    spooled_at: float = field(default_factory=time.monotonic)
    uploaded: bool = False
    indexed: bool = False


@dataclass(frozen=True)
class _Closed:
    """A marker in the queue: every segment of `file` before it is stored."""

    stream: str
    file: str


class IndexStage:
    """Hands spool entries to `submit` (the uploader) at once and indexes them in order;
    `remove`s an entry once it is stored and indexed."""

    def __init__(
        self,
        submit: Callable[[SpoolEntry], bool],
        remove: Callable[[SpoolEntry], None],
        stream: Callable[[], str],
        pending_dir: Path,
        stop: threading.Event,
        enabled: bool = True,
        catch_up_seconds: float = 60.0,
        pressure: Callable[[], bool] = lambda: False,
        unindexed: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._submit = submit
        self._remove = remove
        self._stream = stream  # the timeline being written (switched only with an empty spool)
        self.pending_dir = pending_dir
        self._stop = stop
        self.enabled = enabled
        self.priority = WorkerPriority(catch_up_seconds)
        self._pressure = pressure  # the spool is filling: stop waiting for indexes
        self._unindexed = unindexed  # a segment left without its index, and why
        self._worker: IndexWorker | None = None  # only the stage's thread uses it
        self._lock = threading.Lock()  # the tracked entries
        self._tracked: dict[Path, _Tracked] = {}
        self._queue: queue.Queue[_Tracked | tuple[_Closed, Callable[[str, str], None]]]
        self._queue = queue.Queue()  # unbounded: the spool's bound holds (entries stay in it)
        self._thread = threading.Thread(target=self._run, name="binlog-index", daemon=True)

    def start(self) -> None:
        if self.enabled:
            self._ensure_worker()  # spawned now, not at the first segment
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if not self._thread.is_alive() and self._worker is not None:
            self._worker.kill()

    def submit(self, entry: SpoolEntry) -> bool:
        """Queue `entry` for its index and hand it to the uploader; False when stopping."""
        tracked = _Tracked(entry, self._stream())
        with self._lock:
            self._tracked[entry.path] = tracked
        self._queue.put(tracked)
        return self._submit(entry)

    def uploaded(self, entry: SpoolEntry) -> None:
        """The uploader stored `entry`'s segment."""
        with self._lock:
            tracked = self._tracked.get(entry.path)
            if tracked is not None:
                tracked.uploaded = True
        if tracked is None or tracked.indexed:
            self._finish(entry)

    def close_file(self, stream: str, file: str, then: Callable[[str, str], None]) -> None:
        """`then(stream, file)` once the indexes of the segments queued before are pending."""
        self._queue.put((_Closed(stream, file), then))

    def lag(self) -> float:
        """Seconds the oldest segment still waiting for its index has waited (0: none)."""
        now = time.monotonic()
        with self._lock:
            waiting = [t.spooled_at for t in self._tracked.values() if not t.indexed]
        return now - min(waiting) if waiting and self.enabled else 0.0

    def _finish(self, entry: SpoolEntry) -> None:
        with self._lock:
            self._tracked.pop(entry.path, None)
        self._remove(entry)

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if isinstance(item, tuple):
                    closed, then = item
                    then(closed.stream, closed.file)
                    continue
                if self.enabled and not self._index(item):
                    return  # stopping: the entry stays in the spool for the next start
                with self._lock:
                    item.indexed = True
                    done = item.uploaded
                if done:
                    self._finish(item.entry)
                if self._queue.empty():
                    self.priority.caught_up()
        finally:
            if self._worker is not None:
                self._worker.kill()

    def _ensure_worker(self) -> IndexWorker | None:
        if self._worker is None:
            worker = IndexWorker()
            try:
                self.priority.worker_started(worker.start())
            except OSError as exc:
                _log.warning("change index worker unavailable", error=str(exc))
                return None
            self._worker = worker
        return self._worker

    def _drop_worker(self, reason: str) -> None:
        """Kill the worker (a new one starts for the next segment) and count the segment."""
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
            self.priority.worker_gone()
        self._unindexed(reason)

    def _index(self, item: _Tracked) -> bool:
        """Index one segment and make its index pending; False when stopping first. Any
        failure leaves the segment unindexed (never holds archiving back: backfill later)."""
        worker = self._ensure_worker()
        if worker is None:
            self._unindexed("worker")
            return True
        try:
            worker.send(item.entry.path, item.entry.extent)
            while (body := worker.receive(_POLL_SECONDS)) is None:
                if self._stop.is_set():
                    return False
                self.priority.waiting(time.monotonic() - item.spooled_at)
                if item.uploaded and self._pressure():
                    _log.warning(
                        "spool over half full: segment left unindexed (backupctl binlog index can)",
                        file=item.entry.file,
                        start=item.entry.start,
                    )
                    self._drop_worker("spool_pressure")
                    return True
        except WorkerGone as exc:
            _log.warning("change index worker died; segment left unindexed", error=str(exc))
            self._drop_worker("worker")
            return True
        except IndexFailed as exc:
            _log.warning("segment not indexed (backupctl binlog index can)", error=str(exc))
            self._unindexed("failed")
            return True
        try:
            write_file(self.pending_dir / pending_name(item.stream, item.entry), body)
        except OSError as exc:
            _log.warning("cannot write a segment's index", error=str(exc))
            self._unindexed("failed")
        return True
