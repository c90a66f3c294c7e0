"""The change index written while archiving: a stage beside the uploader.

Each spooled segment goes to the uploader at once and, in the same order, to one worker
process that indexes it (`change_index`). The index is written durably to the batcher's
pending directory (`index_batcher`), which stores the indexes of consecutive segments as
one object. A spool entry is removed only when both are done: its segment is stored and its
index is pending. So an index is as durable as its segment (a crash leaves the entry in the
spool: uploaded again to the same key, indexed again to the same bytes) and no index
covers a segment that is not stored, while the upload (and so the recovery point and the
archiver's pace) never waits for the index.

Why a process: counting rows walks every row in Python, and in the daemon's process that
would take the interpreter lock from the reader thread. The worker runs at a lower CPU
priority (nice 10), so the reader, the server and the compressors go first; its state
(checksum setting, table maps, the open transaction of a `mid` segment) lives in it, and
it sees the segments in order. A segment that cannot be indexed (or a worker that died) is
left unindexed with a warning: `backupctl binlog index` fills it in later. A file is handed
on as closed (to the batcher, then compaction) only after its segments' indexes are pending.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from backupd.binlog.change_index import Indexer, IndexingError, IndexObject
from backupd.binlog.extent import Extent
from backupd.binlog.index_batcher import pending_name
from backupd.binlog.index_format import encode
from backupd.binlog.spool import SpoolEntry
from backupd.durable import write_file
from backupd.log import get_logger

_log = get_logger("binlog.index")

_WORKER: dict[str, Indexer] = {}  # the worker process's indexer, kept across its calls


def index_spooled(path: str, extent: Extent) -> bytes:
    """In the worker: the index object of one spooled segment."""
    indexer = _WORKER.get("indexer") or _WORKER.setdefault("indexer", Indexer())
    transactions = indexer.index(extent, Path(path).read_bytes())
    return encode(IndexObject(extent.file, extent.start, extent.end, transactions))


def _warm() -> None:
    """In the worker: nothing; the call makes the pool start its process."""


def _lower_priority() -> None:
    """In the worker: yield the CPU to the reader and the server (indexing can lag)."""
    with contextlib.suppress(OSError):
        os.nice(10)


@dataclass
class _Tracked:
    """A spool entry between the spool writer and its removal."""

    entry: SpoolEntry
    stream: str
    future: Future[bytes] | None
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
    ) -> None:
        self._submit = submit
        self._remove = remove
        self._stream = stream  # the timeline being written (switched only with an empty spool)
        self.pending_dir = pending_dir
        self._stop = stop
        self.enabled = enabled
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # the pool and the tracked entries
        self._tracked: dict[Path, _Tracked] = {}
        self._queue: queue.Queue[_Tracked | tuple[_Closed, Callable[[str, str], None]]]
        self._queue = queue.Queue()  # unbounded: the spool's bound holds (entries stay in it)
        self._thread = threading.Thread(target=self._run, name="binlog-index", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self.enabled:
            with self._lock:
                try:
                    self._pool = self._new_pool()
                    self._pool.submit(_warm)  # spawn and import now, not at the first segment
                except (BrokenProcessPool, OSError, RuntimeError) as exc:
                    _log.warning("change index worker unavailable", error=str(exc))
                    self._pool = None  # tried again at the first segment

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, entry: SpoolEntry) -> bool:
        """Start indexing `entry` and hand it to the uploader; False when stopping."""
        tracked = _Tracked(entry, self._stream(), self._start(entry) if self.enabled else None)
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

    def _finish(self, entry: SpoolEntry) -> None:
        with self._lock:
            self._tracked.pop(entry.path, None)
        self._remove(entry)

    def _start(self, entry: SpoolEntry) -> Future[bytes] | None:
        with self._lock:
            try:
                if self._pool is None:
                    self._pool = self._new_pool()
                return self._pool.submit(index_spooled, str(entry.path), entry.extent)
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                _log.warning("change index worker unavailable; segment unindexed", error=str(exc))
                self._pool = None  # a new worker for the next segment
                return None

    @staticmethod
    def _new_pool() -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # the daemon has threads: no fork
        return ProcessPoolExecutor(1, mp_context=context, initializer=_lower_priority)

    def _run(self) -> None:
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
            if item.future is not None and not self._write(item, item.future):
                return  # stopping: the entry stays in the spool for the next start
            with self._lock:
                item.indexed = True
                done = item.uploaded
            if done:
                self._finish(item.entry)

    def _write(self, item: _Tracked, future: Future[bytes]) -> bool:
        """Wait for the index and make it pending; False when stopping first."""
        while not future.done():
            if self._stop.wait(0.05):
                return False
        try:
            body = future.result()
        except BrokenProcessPool as exc:
            _log.warning("change index worker died; segment left unindexed", error=str(exc))
            with self._lock:
                self._pool = None
            return True
        except (IndexingError, Exception) as exc:  # never hold archiving back: backfill later
            _log.warning("segment not indexed (backupctl binlog index can)", error=str(exc))
            return True
        try:
            write_file(self.pending_dir / pending_name(item.stream, item.entry), body)
        except OSError as exc:
            _log.warning("cannot write a segment's index", error=str(exc))
        return True
