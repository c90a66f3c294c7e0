"""Compaction: once a binlog file is closed and fully archived, one object replaces its
segments, so the repository does not fill with one-second objects.

The compacted object is itself a segment [0, size) of kind `eof`, so planners need no second
format: where segments overlap the longest wins. Only one timeline's segments are ever
compacted together (the stream is part of the request). Order of work keeps every moment
restorable: verify the parts, store the whole, store its change index (the parts' indexes
merged), store the manifest, only then delete the parts and their indexes.
The whole file is held in memory, so only files up to `MAX_BYTES` are compacted whole;
larger ones are rolled up instead, folded in runs of `binlog.rollup_bytes` (`rollup`) as
open files are while they grow. (Whole compaction also indexes a file whose segments missed
their index; roll-up does not yet, so the limit stays at `MAX_BYTES` for now.)
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from dataclasses import replace

from backupd.binlog import index_store, layout, rollup
from backupd.binlog.change_index import Indexer, IndexingError, IndexObject
from backupd.binlog.recent import RecentSegments
from backupd.binlog.uploader import Target, encode
from backupd.errors import BackupdError
from backupd.log import get_logger
from backupd.storage import ObjectStore

_log = get_logger("binlog.compactor")

MAX_BYTES = 256 * 1024 * 1024


def compact_file(
    target: Target,
    stream: str,
    file: str,
    recent: RecentSegments | None = None,
    index: bool = True,
    max_bytes: int = MAX_BYTES,
    keys: list[str] | None = None,
) -> layout.SegmentKey | None:
    """Compact one closed file of one timeline's `stream`; None when there is nothing to do
    (or it is not closed, or larger than `max_bytes`). Segments still in `recent` are not
    downloaded again. With `index`, the file's change index objects are merged into one
    (without, they stay: a range still covers the same bytes). `keys`: the file's listing,
    when the caller has it."""
    store = target.store()
    keys = rollup.file_keys(store, stream, file) if keys is None else keys
    segments = [seg for key in keys if (seg := layout.parse_segment(key)) is not None]
    found = layout.chain(segments)
    if found is None or not found.closed or found.holes or found.end > max_bytes:
        return None
    parts = [seg for seg in found.segments if seg.size > 0]
    if len(parts) == 1 and parts[0].start == 0 and len(segments) == len(found.segments):
        return None  # already one object
    raw = b"".join(rollup.segment_bytes(store, seg, recent) for seg in parts)
    whole = replace(rollup.joined_extent(parts), start=0, kind="eof")
    encoded = encode(stream, whole, raw, target.compression, target.level)
    store.put(encoded.key.key, encoded.body)
    indexes = index_store.indexes_of(keys)
    merged = _merge_index(store, parts, indexes, encoded.key, raw) if index else None
    manifest = {
        "file": file,
        "size": found.end,
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "object": encoded.key.key,
        "replaced": [seg.key for seg in segments if seg.key != encoded.key.key],
    }
    store.put(layout.manifest_key(stream, file), json.dumps(manifest, indent=1).encode())
    for seg in segments:
        if seg.key != encoded.key.key:
            store.delete(seg.key)
    for old in indexes:
        if merged is not None and old != merged:
            store.delete(old.key)  # the merged index holds their transactions
    return encoded.key


def _merge_index(
    store: ObjectStore,
    parts: list[layout.SegmentKey],
    indexes: list[layout.IndexKey],
    whole: layout.SegmentKey,
    raw: bytes,
) -> layout.IndexKey | None:
    """The compacted segment's change index: the indexes covering its parts merged, or (when
    a part has none) the whole file indexed again. None when it cannot be made."""
    whole_index = index_store.covering(whole, indexes)
    if whole_index is not None:
        return whole_index  # one object holds the whole file already (stored at its close)
    found = [index_store.covering(part, indexes) for part in parts]
    try:
        if all(found):
            chosen = {key for key in found if key is not None}
            transactions = index_store.merged(index_store.load_index(store, k) for k in chosen)
        else:
            _log.info("a compacted part had no change index; indexing the file", file=whole.file)
            transactions = Indexer().index(whole.extent, raw)
    except (BackupdError, IndexingError) as exc:
        _log.warning("compacted file not indexed (backupctl binlog index can)", error=str(exc))
        return None
    obj = IndexObject(whole.file, whole.start, whole.end, transactions)
    return index_store.store_index(store, whole.stream, obj)


TIDY_SECONDS = 60.0  # after a fold, its file's parts are deleted this much later


class Compactor:
    """A thread folding files: a closed file into one object (or rolled up, when large), an
    open one in runs each time another `rollup_bytes` of it is ready (and leftovers at
    start). One job per file waits at a time. A file that was folded gets another job
    `tidy_seconds` later, which deletes what the fold replaced (and folds what is ready)."""

    def __init__(
        self,
        target: Target,
        stop: threading.Event,
        recent: RecentSegments | None = None,
        index: bool = True,
        rollup_bytes: int = 0,
        tidy_seconds: float = TIDY_SECONDS,
        whole_bytes: int = MAX_BYTES,
    ) -> None:
        self.target = target
        self.tidy_seconds = tidy_seconds
        self.recent = recent
        self.index = index
        self.rollup_bytes = rollup_bytes  # 0: open files stay as segments
        self.whole_bytes = whole_bytes  # larger closed files are rolled up
        self._stop = stop
        self._lock = threading.Lock()
        self._waiting: set[tuple[str, str]] = set()
        self._stored: dict[tuple[str, str], int] = {}  # bytes stored since the last job
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(1024)
        self._tidy: dict[tuple[str, str], float] = {}  # file -> when (monotonic) its job is due
        self._settled = threading.Condition()  # notified as jobs finish (`settle`)
        self._thread = threading.Thread(target=self._run, name="binlog-compact", daemon=True)

    def start(self, files: list[tuple[str, str]]) -> None:
        for stream, file in files:
            self.submit(stream, file)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def submit(self, stream: str, file: str) -> None:
        with self._lock:
            self._stored.pop((stream, file), None)  # the job takes all stored so far
            if (stream, file) in self._waiting:
                return
            self._waiting.add((stream, file))
        try:
            self._queue.put_nowait((stream, file))
        except queue.Full:
            with self._lock:
                self._waiting.discard((stream, file))
            _log.warning("compaction queue full; file left as segments", file=file)

    def stored(self, stream: str, file: str, size: int) -> None:
        """`size` more bytes of `file` are ready to fold (stored, and with the index on,
        indexed): roll the file up once enough have gathered."""
        if not self.rollup_bytes:
            return
        with self._lock:
            total = self._stored.pop((stream, file), 0) + size
            if total < self.rollup_bytes:
                self._stored[(stream, file)] = total
                return
        self.submit(stream, file)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for due in [where for where, at in self._tidy.items() if at <= now]:
                self.submit(*due)  # queued before it leaves `_tidy`: `settle` sees it throughout
                with self._settled:
                    del self._tidy[due]
            try:
                stream, file = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                self._waiting.discard((stream, file))
            try:
                self._fold(stream, file)
            except BackupdError as exc:
                _log.warning("compaction failed; segments kept", file=file, error=exc.message)
            finally:
                self._queue.task_done()
                with self._settled:
                    self._settled.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait until no job waits or runs and no tidy job is due later; False on timeout
        (what a test awaits instead of polling the repository)."""
        deadline = time.monotonic() + timeout
        with self._settled:
            while self._queue.unfinished_tasks or self._tidy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._settled.wait(left)
        return True

    def _fold(self, stream: str, file: str) -> None:
        keys = rollup.file_keys(self.target.store(), stream, file)  # one LIST for both steps
        key = compact_file(
            self.target, stream, file, self.recent, self.index, self.whole_bytes, keys
        )
        if key is not None:
            _log.info("binlog file compacted", file=file, size=key.end)
            return
        if not self.rollup_bytes:
            return
        # compaction changed nothing: the listing still holds
        runs = rollup.roll_up(
            self.target, stream, file, self.rollup_bytes, self.recent, self.index, self._stop, keys
        )
        for run in runs:
            _log.info("binlog segments rolled up", file=file, start=run.start, end=run.end)
        if runs:
            with self._settled:
                self._tidy.setdefault((stream, file), time.monotonic() + self.tidy_seconds)
