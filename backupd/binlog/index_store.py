"""Change index objects in the repository: store, load, merge, and find the segments that
have none. The compactor, the backfill and `backupctl find` all go through here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from backupd.binlog import layout
from backupd.binlog.change_index import IndexObject, Transaction, decode, encode
from backupd.errors import ArchiveCorrupt
from backupd.storage import ObjectStore


def store_index(
    store: ObjectStore, segment: layout.SegmentKey, obj: IndexObject
) -> layout.IndexKey:
    """Store `obj` as the index of `segment`; returns its key."""
    body = encode(obj)
    key = layout.index_key_for(segment, hashlib.sha256(body).hexdigest())
    store.put(key.key, body)
    return key


def load_index(store: ObjectStore, key: layout.IndexKey) -> IndexObject:
    """One index object, its checksum verified; ArchiveCorrupt when damaged."""
    try:
        return decode(store.get(key.key), key.object_sha256)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveCorrupt(f"change index {key.key} is unreadable: {exc}") from exc


def indexes_of(keys: Iterable[str]) -> list[layout.IndexKey]:
    return [found for key in keys if (found := layout.parse_index(key)) is not None]


def index_for(
    segment: layout.SegmentKey, indexes: Iterable[layout.IndexKey]
) -> layout.IndexKey | None:
    """The index describing exactly `segment` (the first one, should there be two)."""
    return next((index for index in sorted(indexes) if index.describes(segment)), None)


def unindexed(
    segments: Iterable[layout.SegmentKey], indexes: Iterable[layout.IndexKey]
) -> list[layout.SegmentKey]:
    """The segments (non-empty) that no index object describes."""
    described = {index.identity for index in indexes}
    return [
        seg for seg in segments if seg.size > 0 and layout.segment_identity(seg) not in described
    ]


def merged(parts: list[IndexObject]) -> list[Transaction]:
    """The transactions of consecutive segments' indexes as one list (in file order; a
    transaction listed twice is kept once)."""
    seen: set[int] = set()
    out: list[Transaction] = []
    for part in sorted(parts, key=lambda p: p.extent.start):
        for txn in part.transactions:
            if txn.pos not in seen:
                seen.add(txn.pos)
                out.append(txn)
    return out
