"""The change index written while archiving: a stage between the spool and the uploader.

Each spooled segment is indexed (`change_index`) in order by one worker process, and the
index is written next to it in the spool (`<entry>.idx`, fsynced) before the entry goes
to the uploader. Once the segment is stored, its index moves to the batcher's pending
directory (`index_batcher`), which stores the pending indexes of consecutive segments as
one object. So an index is as durable as its segment (a crash leaves it in the spool), the
keys come from the content (no duplicate), and no index covers a segment not stored.

Why a process: counting rows walks every row in Python, and in the daemon's process that
would take the interpreter lock from the reader thread (the archiver's throughput). The
worker runs beside it on another core; its state (checksum setting, table maps, the open
transaction of a `mid` segment) lives in the worker, which sees the segments in order.
A segment that cannot be indexed (or a worker that died) is uploaded without an index, with
a warning: `backupctl binlog index` fills it in later. Indexing never holds archiving back
beyond the stage's short queue.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from backupd.binlog.change_index import Indexer, IndexingError, IndexObject, encode
from backupd.binlog.extent import Extent
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


class IndexStage:
    """Takes spool entries from the spool writer, hands them to `submit` (the uploader) in
    the same order, each with its index beside it when indexing is on and succeeded."""

    def __init__(
        self, submit: Callable[[SpoolEntry], bool], stop: threading.Event, enabled: bool = True
    ) -> None:
        self._submit = submit
        self._stop = stop
        self.enabled = enabled
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # the pool is replaced by either thread
        self._queue: queue.Queue[tuple[SpoolEntry, Future[bytes] | None]] = queue.Queue(8)
        self._thread = threading.Thread(target=self._run, name="binlog-index", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self.enabled:
            with self._lock:
                self._pool = self._new_pool()
                self._pool.submit(_warm)  # spawn and import now, not at the first segment

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, entry: SpoolEntry) -> bool:
        """Queue `entry` (its indexing starts now); waits while full; False when stopping."""
        future = None
        if self.enabled and not entry.index_path.exists():
            future = self._start(entry)
        while not self._stop.is_set():
            try:
                self._queue.put((entry, future), timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

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
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def _run(self) -> None:
        while True:
            try:
                entry, future = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if future is not None and not self._write(entry, future):
                return
            if not self._submit(entry):
                return

    def _write(self, entry: SpoolEntry, future: Future[bytes]) -> bool:
        """Wait for the index and spool it beside the entry; False when stopping first."""
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
            write_file(entry.index_path, body)
        except OSError as exc:
            _log.warning("cannot spool a segment's index", error=str(exc))
        return True
