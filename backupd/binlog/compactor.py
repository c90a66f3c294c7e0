"""Compaction: once a binlog file is closed and fully archived, one object replaces its
segments, so the repository does not fill with one-second objects.

The compacted object is itself a segment [0, size) of kind `eof`, so planners need no second
format: where segments overlap the longest wins. Only one timeline's segments are ever
compacted together (the stream is part of the request). Order of work keeps every moment
restorable: verify the parts, store the whole, store its change index (the parts' indexes
merged), store the manifest, only then delete the parts and their indexes.
Files larger than `MAX_BYTES` keep their segments (the whole file is held in memory): with
MariaDB's default 1 GiB `max_binlog_size` that is one object per second of writes (a known
limit, docs/costs.md; folding large files in pieces would lift it).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading

from backupd.binlog import index_store, layout
from backupd.binlog.change_index import Indexer, IndexingError, IndexObject
from backupd.binlog.extent import Extent
from backupd.binlog.fetch import load_segment
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
) -> layout.SegmentKey | None:
    """Compact one closed file of one timeline's `stream`; None when there is nothing to do
    (or it is not closed). Segments still in `recent` are not downloaded again. With
    `index`, the file's change index objects are merged into one (without, they stay: a
    range still covers the same bytes)."""
    store = target.store()
    keys = [info.key for info in store.list(layout.file_prefix(stream, file))]
    segments = [seg for key in keys if (seg := layout.parse_segment(key)) is not None]
    found = layout.chain(segments)
    if found is None or not found.closed or found.holes or found.end > MAX_BYTES:
        return None
    parts = [seg for seg in found.segments if seg.size > 0]
    if len(parts) == 1 and parts[0].start == 0 and len(segments) == len(found.segments):
        return None  # already one object
    raw = b"".join(_raw(store, seg, recent) for seg in parts)
    whole = _whole_extent(found, parts)
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


def _raw(store: ObjectStore, seg: layout.SegmentKey, recent: RecentSegments | None) -> bytes:
    kept = recent.take(seg.raw_sha256) if recent is not None else None
    if kept is not None and len(kept) == seg.size:
        return kept
    return load_segment(store, seg)


def _whole_extent(found: layout.FileChain, parts: list[layout.SegmentKey]) -> Extent:
    """[0, size) of the file, as the compacted object's key spells it."""
    gtids = [seg for seg in parts if seg.first_gtid]
    return Extent(
        file=found.file,
        start=0,
        end=found.end,
        first_time=min(seg.first_time for seg in parts),
        last_time=max(seg.last_time for seg in parts),
        first_gtid=gtids[0].first_gtid if gtids else "",
        last_gtid=gtids[-1].last_gtid if gtids else "",
        kind="eof",
    )


class Compactor:
    """A thread compacting files as their last segment lands (and leftovers at start)."""

    def __init__(
        self,
        target: Target,
        stop: threading.Event,
        recent: RecentSegments | None = None,
        index: bool = True,
    ) -> None:
        self.target = target
        self.recent = recent
        self.index = index
        self._stop = stop
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(1024)
        self._thread = threading.Thread(target=self._run, name="binlog-compact", daemon=True)

    def start(self, closed_files: list[tuple[str, str]]) -> None:
        for stream, file in closed_files:
            self.submit(stream, file)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def submit(self, stream: str, file: str) -> None:
        try:
            self._queue.put_nowait((stream, file))
        except queue.Full:
            _log.warning("compaction queue full; file left as segments", file=file)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream, file = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                key = compact_file(self.target, stream, file, self.recent, self.index)
            except BackupdError as exc:
                _log.warning("compaction failed; segments kept", file=file, error=exc.message)
                continue
            if key is not None:
                _log.info("binlog file compacted", file=file, size=key.end)
