"""Change index objects in the repository: store, load, merge, and which segments they
cover. The index batcher, the compactor, the backfill and `backupctl find` go through here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from backupd.binlog import index_format, layout
from backupd.binlog.change_index import IndexObject, Transaction
from backupd.binlog.index_format import decode, encode
from backupd.errors import ArchiveCorrupt
from backupd.storage import ObjectStore


def key_for(stream: str, obj: IndexObject, body: bytes) -> layout.IndexKey:
    return layout.IndexKey(stream, obj.file, obj.start, obj.end, hashlib.sha256(body).hexdigest())


def store_index(store: ObjectStore, stream: str, obj: IndexObject) -> layout.IndexKey:
    """Store `obj` in `stream`; returns its key."""
    body = encode(obj)
    key = key_for(stream, obj, body)
    store.put(key.key, body)
    return key


def load_index(store: ObjectStore, key: layout.IndexKey) -> IndexObject:
    """One index object, its checksum verified; ArchiveCorrupt when damaged."""
    try:
        return decode(store.get(key.key), key.object_sha256)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveCorrupt(f"change index {key.key} is unreadable: {exc}") from exc


def open_index(store: ObjectStore, key: layout.IndexKey) -> index_format.Loaded:
    """One index object read lazily (its summary first), its checksum verified;
    ArchiveCorrupt when damaged."""
    try:
        return index_format.load(store.get(key.key), key.object_sha256)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveCorrupt(f"change index {key.key} is unreadable: {exc}") from exc


def indexes_of(keys: Iterable[str]) -> list[layout.IndexKey]:
    return [found for key in keys if (found := layout.parse_index(key)) is not None]


def covering(
    segment: layout.SegmentKey, indexes: Iterable[layout.IndexKey]
) -> layout.IndexKey | None:
    """The widest index covering `segment` (None: it has no index)."""
    found = [index for index in indexes if index.covers(segment)]
    return max(found, key=lambda i: (i.end - i.start, i.key)) if found else None


def covering_each(
    segments: Iterable[layout.SegmentKey], indexes: Iterable[layout.IndexKey]
) -> dict[layout.SegmentKey, layout.IndexKey | None]:
    """`covering` for many segments at once: one sweep per file (a week of one-second
    segments against minute-long indexes would otherwise compare every pair)."""
    by_file: dict[tuple[str, str], list[layout.IndexKey]] = {}
    for index in indexes:
        by_file.setdefault((index.stream, index.file), []).append(index)
    found: dict[layout.SegmentKey, layout.IndexKey | None] = {}
    segs: dict[tuple[str, str], list[layout.SegmentKey]] = {}
    for seg in segments:
        segs.setdefault((seg.stream, seg.file), []).append(seg)
    for where, parts in segs.items():
        waiting = sorted(by_file.get(where, []), key=lambda i: i.start, reverse=True)
        active: list[layout.IndexKey] = []  # started at or before a segment seen
        for seg in sorted(parts, key=lambda s: (s.end, s.start)):
            while waiting and waiting[-1].start <= seg.start:
                active.append(waiting.pop())
            # ends only grow in this order: an index ending before this segment covers no later one
            active = [index for index in active if index.end >= seg.end]
            covering = [index for index in active if index.start <= seg.start]
            found[seg] = max(covering, key=lambda i: (i.end - i.start, i.key)) if covering else None
    return found


def unindexed(
    segments: Iterable[layout.SegmentKey], indexes: Iterable[layout.IndexKey]
) -> list[layout.SegmentKey]:
    """The segments (non-empty) no index object covers."""
    wanted = [seg for seg in segments if seg.size > 0]
    found = covering_each(wanted, indexes)
    return [seg for seg in wanted if found[seg] is None]


def merged(parts: Iterable[IndexObject]) -> list[Transaction]:
    """The transactions of several indexes of one file as one list in file order (a
    transaction listed twice, by overlapping indexes, is kept once)."""
    seen: set[int] = set()
    out: list[Transaction] = []
    for part in sorted(parts, key=lambda p: p.start):
        for txn in part.transactions:
            if txn.pos not in seen:
                seen.add(txn.pos)
                out.append(txn)
    return sorted(out, key=lambda txn: txn.pos)
