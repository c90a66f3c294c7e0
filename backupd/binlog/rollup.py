"""Roll-up: fold runs of a binlog file's small segments into objects of about
`binlog.rollup_bytes`, while the file is still written and after it closes.

Segments are cut every second, so a file is one object per second of writes until it is
compacted, and whole-file compaction holds the file in memory (up to 256 MiB): a
default 1 GiB `max_binlog_size` file would stay ~600k objects a week, and every LIST-based
reader (`find`, the hole check, `restore plan`, `verify`, `prune`) would pay for them.

- A run is consecutive segments of the file's chain. With the change index on, its edges are
  edges of stored index objects, so its index is theirs merged, exactly; a segment whose index
  is not stored yet ends a run (the next roll-up takes it, once `backupctl binlog index` or the
  worker has written it).
- The run's object is a segment [start, end) of the kind of its last part; `layout.chain`
  prefers the longest segment at a start, so readers pick it over its first part.
- Order keeps every moment restorable and searchable: the merged index, then the run's
  object. Its parts and their indexes are deleted by the file's next roll-up, not at once: a
  paginated LIST running meanwhile could otherwise see neither the parts after its page
  boundary nor the new object before it, a hole that is not there. Once the object is
  older than any listing, its parts' deletion is invisible to readers (the chain already
  picks the object). A crash anywhere leaves only what the next roll-up deletes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from backupd.binlog import index_store, layout
from backupd.binlog.change_index import IndexObject
from backupd.binlog.extent import Extent
from backupd.binlog.fetch import load_segment
from backupd.binlog.recent import RecentSegments
from backupd.binlog.uploader import Target, encode
from backupd.errors import ArchiveCorrupt
from backupd.storage import ObjectStore

_PARALLEL_GETS = 8  # parts evicted from `recent` (a restart) are fetched this many at once


@dataclass(frozen=True)
class Run:
    """Consecutive segments to fold into one, and the index objects that tile them."""

    parts: tuple[layout.SegmentKey, ...]
    indexes: tuple[layout.IndexKey, ...]  # in file order; empty with the index off

    @property
    def start(self) -> int:
        return self.parts[0].start

    @property
    def end(self) -> int:
        return self.parts[-1].end

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class _Unit:
    """The smallest piece a run is made of: the segments one index object covers (or one
    segment, where none covers it exactly)."""

    parts: tuple[layout.SegmentKey, ...]
    index: layout.IndexKey | None

    @property
    def size(self) -> int:
        return self.parts[-1].end - self.parts[0].start


def _span(units: list[_Unit]) -> int:
    """Bytes of consecutive units (0 for none)."""
    return units[-1].parts[-1].end - units[0].parts[0].start if units else 0


def plan(
    chain: Sequence[layout.SegmentKey],
    indexes: Iterable[layout.IndexKey],
    run_bytes: int,
    closed: bool,
    indexed: bool,
) -> list[Run]:
    """The runs to fold in one file's chain (pure). A run reaches `run_bytes` (a closed file's
    shorter runs too: nothing will join them) and never exceeds twice that, so memory stays
    bounded; a segment of half `run_bytes` or more is left alone, as is a run of one."""
    units = _units([seg for seg in chain if seg.size > 0], indexes, indexed)
    runs: list[Run] = []
    current: list[_Unit] = []

    def close(final: bool) -> None:
        parts = tuple(seg for unit in current for seg in unit.parts)
        if len(parts) > 1 and (_span(current) >= run_bytes or final):
            found = tuple(unit.index for unit in current if unit.index is not None)
            runs.append(Run(parts, found if indexed else ()))
        current.clear()

    for unit in units:
        done = len(unit.parts) == 1 and unit.size * 2 >= run_bytes
        if (indexed and unit.index is None) or done or unit.size > 2 * run_bytes:
            close(final=closed)
            continue
        if _span(current) + unit.size > 2 * run_bytes:
            close(final=True)
        current.append(unit)
        if _span(current) >= run_bytes:
            close(final=True)
    close(final=closed)
    return runs


def _units(
    parts: list[layout.SegmentKey], indexes: Iterable[layout.IndexKey], indexed: bool
) -> list[_Unit]:
    """`parts` cut where index objects begin and end; without the index, one per segment."""
    if not indexed:
        return [_Unit((seg,), None) for seg in parts]
    ends = {seg.end for seg in parts}
    starting: dict[int, layout.IndexKey] = {}  # the widest ending on a segment's end
    for index in indexes:
        if index.end <= index.start or index.end not in ends:
            continue  # (an empty file's end marker has an empty index: it covers nothing)
        best = starting.get(index.start)
        if best is None or (index.end, index.key) > (best.end, best.key):
            starting[index.start] = index
    units: list[_Unit] = []
    i = 0
    while i < len(parts):
        found = starting.get(parts[i].start)
        j = i
        while found is not None and parts[j].end < found.end:
            j += 1
        units.append(_Unit(tuple(parts[i : j + 1]), found))
        i = j + 1
    return units


def shadowed(
    chain: Sequence[layout.SegmentKey],
    segments: Iterable[layout.SegmentKey],
    indexes: Iterable[layout.IndexKey],
) -> tuple[list[layout.SegmentKey], list[layout.IndexKey]]:
    """Objects a fold replaced (or an interrupted compaction left behind) (pure): segments
    inside a longer chain segment, and indexes inside one that has an index of its own
    range."""
    picked = set(chain)
    indexes = list(indexes)
    own = {(i.start, i.end) for i in indexes}
    wide = [seg for seg in chain if seg.size > 0]

    def inside(start: int, end: int, whole: layout.SegmentKey) -> bool:
        return whole.start <= start and end <= whole.end and end - start < whole.size

    segs = [
        seg
        for seg in segments
        if seg not in picked and seg.size > 0 and any(inside(seg.start, seg.end, w) for w in wide)
    ]
    idx = [
        index
        for index in indexes
        if any(inside(index.start, index.end, w) and (w.start, w.end) in own for w in wide)
    ]
    return segs, idx


def roll_up(
    target: Target,
    stream: str,
    file: str,
    run_bytes: int,
    recent: RecentSegments | None = None,
    index: bool = True,
    stop: threading.Event | None = None,
    keys: list[str] | None = None,
) -> list[layout.SegmentKey]:
    """Delete what earlier folds of one file of `stream` replaced, and fold what is ready;
    the objects stored (one per run). `keys`: the file's listing, when the caller has it."""
    store = target.store()
    keys = file_keys(store, stream, file) if keys is None else keys
    segments = [seg for key in keys if (seg := layout.parse_segment(key)) is not None]
    indexes = index_store.indexes_of(keys)
    found = layout.chain(segments)
    if found is None:
        return []
    left_segments, left_indexes = shadowed(found.segments, segments, indexes)
    for seg in left_segments:
        store.delete(seg.key)
    for old in left_indexes:
        store.delete(old.key)
    rolled = []
    for run in plan(found.segments, indexes, run_bytes, found.closed, index):
        if stop is not None and stop.is_set():
            break
        rolled.append(_fold(store, target, run, recent))
    return rolled


def _fold(
    store: ObjectStore, target: Target, run: Run, recent: RecentSegments | None
) -> layout.SegmentKey:
    with ThreadPoolExecutor(_PARALLEL_GETS) as pool:
        raw = b"".join(pool.map(lambda seg: segment_bytes(store, seg, recent), run.parts))
    if len(raw) != run.size:
        raise ArchiveCorrupt(f"{run.parts[0].file} {run.start}..{run.end}: parts do not join")
    stream = run.parts[0].stream
    encoded = encode(stream, joined_extent(run.parts), raw, target.compression, target.level)
    if len(run.indexes) > 1:  # (one is exactly the run's range already; none: index off)
        _store_merged_index(store, stream, run)  # first: the object is never without one
    store.put(encoded.key.key, encoded.body)  # its parts are deleted by the next roll-up
    return encoded.key


def _store_merged_index(store: ObjectStore, stream: str, run: Run) -> None:
    """The run's index: its parts' indexes merged into one [start, end)."""
    txns = index_store.merged(index_store.load_index(store, key) for key in run.indexes)
    index_store.store_index(store, stream, IndexObject(run.parts[0].file, run.start, run.end, txns))


def file_keys(store: ObjectStore, stream: str, file: str) -> list[str]:
    """Every key under one file of `stream`: segments, indexes, the manifest (one LIST)."""
    return [info.key for info in store.list(layout.file_prefix(stream, file))]


def segment_bytes(
    store: ObjectStore, seg: layout.SegmentKey, recent: RecentSegments | None
) -> bytes:
    """A stored segment's raw bytes: kept in memory since its upload, else downloaded."""
    kept = recent.take(seg.raw_sha256) if recent is not None else None
    if kept is not None and len(kept) == seg.size:
        return kept
    return load_segment(store, seg)


def joined_extent(parts: Sequence[layout.SegmentKey]) -> Extent:
    """The extent of consecutive segments as one: their range, times, GTIDs, the last kind."""
    gtids = [seg for seg in parts if seg.first_gtid]
    return Extent(
        file=parts[0].file,
        start=parts[0].start,
        end=parts[-1].end,
        first_time=min(seg.first_time for seg in parts),
        last_time=max(seg.last_time for seg in parts),
        first_gtid=gtids[0].first_gtid if gtids else "",
        last_gtid=gtids[-1].last_gtid if gtids else "",
        kind=parts[-1].kind,
    )
