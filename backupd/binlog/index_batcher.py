"""Store the change index of stored segments in batches: one object per run of consecutive
segments of a file, not one per segment.

Segments are cut every `flush_seconds` (1 s by default), and a PUT per segment is most of
what archiving costs (docs/costs.md): an index PUT beside each would double it. So each
segment's index waits in `<spool>/index-pending/` (written durably by `index_stage`);
every `binlog.index_flush_seconds`, and at once when a file closes, the pending indexes are
merged per run of consecutive segments, stored as one object, and only then removed. A
crash leaves them pending (stored at the next start; the same content gives the same key,
so nothing is duplicated). A closed file's compaction is submitted only after its indexes
are stored, so compaction keeps or merges them instead of reading the file again. An
object spans at most half `binlog.rollup_bytes` of binlog (a fast writer's minute can be
gigabytes): roll-up folds whole objects, so it needs them smaller than its runs.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backupd.binlog import index_store, layout
from backupd.binlog.change_index import IndexObject
from backupd.binlog.index_format import decode
from backupd.binlog.spool import SpoolEntry, parse_entry
from backupd.durable import fsync_dir
from backupd.errors import BackupdError
from backupd.log import get_logger
from backupd.private import private_dir
from backupd.storage import ObjectStore

_log = get_logger("binlog.index")

PENDING = "index-pending"
_STREAM_SEP = "@"


@dataclass(frozen=True)
class Pending:
    """A stored segment's index waiting for its batch."""

    path: Path
    stream: str
    entry: SpoolEntry  # its extent (the spool entry it came from, already removed)


def pending_name(stream: str, entry: SpoolEntry) -> str:
    return f"{stream.replace('/', '+')}{_STREAM_SEP}{entry.path.name}.idx"


def parse_pending(path: Path) -> Pending | None:
    stream, sep, rest = path.name.partition(_STREAM_SEP)
    entry = parse_entry(path.with_name(rest.removesuffix(".idx"))) if sep else None
    if entry is None or not path.name.endswith(".idx"):
        return None
    return Pending(path, stream.replace("+", "/"), entry)


def runs(pending: list[Pending], max_bytes: int = 0) -> list[list[Pending]]:
    """Pending indexes grouped into runs of consecutive segments of one file of one stream,
    each spanning at most `max_bytes` of binlog (0: any) but for its first segment."""
    out: list[list[Pending]] = []
    for item in sorted(pending, key=lambda p: (p.stream, p.entry.file, p.entry.start)):
        last = out[-1][-1] if out else None
        if (
            last is not None
            and (last.stream, last.entry.file) == (item.stream, item.entry.file)
            and last.entry.end == item.entry.start
            and (not max_bytes or item.entry.end - out[-1][0].entry.start <= max_bytes)
        ):
            out[-1].append(item)
        else:
            out.append([item])
    return out


def _of_file(stream: str, file: str) -> Callable[[Pending], bool]:
    return lambda item: (item.stream, item.entry.file) == (stream, file)


class IndexBatcher:
    """A thread storing pending indexes every `flush_seconds` and when a file closes."""

    def __init__(
        self,
        store: Callable[[], ObjectStore],
        spool_dir: Path,
        stop: threading.Event,
        flush_seconds: float,
        file_closed: Callable[[str, str], None],
        max_bytes: int = 0,
        stored: Callable[[str, str, int], None] = lambda _stream, _file, _size: None,
    ) -> None:
        self._store = store
        self.max_bytes = max_bytes  # an object's binlog span: roll-up folds whole objects
        self._stored = stored  # (stream, file, span): an index object is stored
        self.directory = spool_dir / PENDING
        self._stop = stop
        self.flush_seconds = flush_seconds
        self._file_closed = file_closed  # (stream, file): its indexes are stored
        self._closed: queue.Queue[tuple[str, str]] = queue.Queue()
        self._lock = threading.Lock()  # one flush at a time
        self._thread = threading.Thread(target=self._run, name="binlog-index-batch", daemon=True)

    def start(self) -> None:
        private_dir(self.directory)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close_file(self, stream: str, file: str) -> None:
        """Every segment of `file` is stored: store its indexes now, then report it closed."""
        self._closed.put((stream, file))

    def pending(self) -> list[Pending]:
        found = (parse_pending(path) for path in self.directory.iterdir())
        return [item for item in found if item is not None]

    def _run(self) -> None:
        next_flush = time.monotonic()  # what a previous run left goes first
        while not self._stop.is_set():
            wait = min(0.5, max(0.0, next_flush - time.monotonic()))  # wakes to see a stop
            try:
                stream, file = self._closed.get(timeout=wait)
            except queue.Empty:
                if time.monotonic() >= next_flush:
                    self.flush()
                    next_flush = time.monotonic() + self.flush_seconds
                continue
            self.flush(_of_file(stream, file))
            self._file_closed(stream, file)
        self.flush()  # stopping: store what waits (a crash leaves it for the next start)

    def flush(self, which: Callable[[Pending], bool] = lambda _item: True) -> int:
        """Store the pending indexes `which` selects, one object per run; the count stored.
        A failure keeps them pending for the next flush."""
        stored = 0
        with self._lock:
            try:
                chosen = [item for item in self.pending() if which(item)]
            except OSError as exc:
                _log.warning("cannot list pending change indexes", error=str(exc))
                return 0
            for run in runs(chosen, self.max_bytes):
                try:
                    self._store_run(run)
                    stored += 1
                    span = run[-1].entry.end - run[0].entry.start
                    self._stored(run[0].stream, run[0].entry.file, span)
                except (BackupdError, OSError, ValueError) as exc:
                    text = exc.message if isinstance(exc, BackupdError) else str(exc)
                    _log.warning("change index not stored yet; retrying later", error=text)
        return stored

    def _store_run(self, run: list[Pending]) -> None:
        first, last = run[0].entry, run[-1].entry
        if len(run) == 1:  # one segment: its spooled index is the object, as it is
            body = run[0].path.read_bytes()
            sha = hashlib.sha256(body).hexdigest()
            key = layout.IndexKey(run[0].stream, first.file, first.start, first.end, sha)
            self._store().put(key.key, body)
        else:
            parts = []
            for item in run:
                body = item.path.read_bytes()
                parts.append(decode(body, hashlib.sha256(body).hexdigest()))
            obj = IndexObject(first.file, first.start, last.end, index_store.merged(parts))
            index_store.store_index(self._store(), run[0].stream, obj)
        for item in run:
            item.path.unlink(missing_ok=True)
        fsync_dir(self.directory)
