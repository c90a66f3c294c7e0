"""Find transactions in the binlog archive by what they changed: `backupctl find`.

From the repository alone (no daemon, no database), reading only change index objects: one
LIST per timeline, then the index of every segment whose time range can hold a match
(fetched in parallel). Newest first. A segment without an index is reported (it may hold a
match: `backupctl binlog index` writes the missing ones), never silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from backupd.binlog import index_store, layout, statements
from backupd.binlog.archive import Archive, ArchiveView, Timeline, clusters
from backupd.binlog.branches import membership
from backupd.binlog.change_index import Transaction
from backupd.errors import BackupdError, UsageError
from backupd.storage import ObjectStore

OPS = ("insert", "update", "delete", "ddl")
_ROW_OPS = ("insert", "update", "delete")
_PARALLEL_GETS = 8
_MARKS = {False: "", True: " [abandoned]", None: " [branch point unknown]"}


@dataclass(frozen=True)
class Query:
    tables: tuple[str, ...] = ()  # "db.t" shell patterns
    ops: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    min_rows: int = 0
    statement: re.Pattern[str] | None = None
    timeline: int | None = None
    limit: int = 50

    def rows_of(self, txn: Transaction) -> int:
        """Rows of the selected operations on the selected tables."""
        ops = [i for i, op in enumerate(_ROW_OPS) if not self.ops or op in self.ops]
        return sum(
            counts[i] for name, counts in txn.tables.items() if self._table(name) for i in ops
        )

    def _table(self, name: str) -> bool:
        return not self.tables or any(fnmatchcase(name, pattern) for pattern in self.tables)

    def matches(self, txn: Transaction) -> bool:
        if self.since is not None and txn.commit_time < self.since.timestamp():
            return False
        if self.until is not None and txn.commit_time > self.until.timestamp():
            return False
        if self.tables and not any(self._table(name) for name in txn.tables):
            return False
        if self.statement is not None and not self.statement.search(txn.statement or ""):
            return False
        if self.ops and not self._op(txn):
            return False
        return not self.min_rows or self.rows_of(txn) >= self.min_rows

    def _op(self, txn: Transaction) -> bool:
        if "ddl" in self.ops and txn.kind == statements.KIND_DDL:
            return True
        return any(
            counts[i]
            for name, counts in txn.tables.items()
            if self._table(name)
            for i, op in enumerate(_ROW_OPS)
            if op in self.ops
        )

    def covers(self, seg: layout.SegmentKey) -> bool:
        """Whether a segment's time range can hold a match (its key says the range)."""
        if self.since is not None and seg.last_time < int(self.since.timestamp()):
            return False
        return not (self.until is not None and seg.first_time > self.until.timestamp())


@dataclass(frozen=True)
class Found:
    timeline: int
    txn: Transaction
    abandoned: bool | None = False  # off the latest timeline's history (None: cannot tell)

    def to_json(self) -> dict[str, Any]:
        """The stable document of `find --json` (INTERFACE.md)."""
        txn = self.txn
        return {
            "gtid": txn.gtid or None,
            "timeline": self.timeline,
            "file": txn.file,
            "pos": txn.pos,
            "end_pos": txn.end_pos,
            "commit_time": iso(txn.commit_time),
            "tables": {
                name: dict(zip(_ROW_OPS, counts, strict=True))
                for name, counts in sorted(txn.tables.items())
            },
            "rows": txn.rows,
            "kind": txn.kind,
            "statement": txn.statement,
            "abandoned": self.abandoned,
        }

    def order(self) -> tuple[int, int, tuple[str, int], int]:
        return (self.txn.commit_time, self.timeline, layout.file_order(self.txn.file), self.txn.pos)


@dataclass
class Result:
    found: list[Found]
    warnings: list[str] = field(default_factory=list)


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(store: ObjectStore, cluster: str, query: Query) -> Result:
    """Matching transactions of the cluster's timelines (or `query.timeline`), newest first."""
    if not cluster:
        known = clusters(store)
        if len(known) != 1:
            raise UsageError(f"choose a cluster with --cluster (archives for: {known or 'none'})")
        cluster = known[0]
    view = Archive(store, cluster).read()
    if not view.timelines:
        raise UsageError(f"no binlog archive for cluster {cluster!r}")
    chosen = [view.get(query.timeline)] if query.timeline else list(view.timelines.values())
    result = Result([])
    for timeline in chosen:
        _search(store, timeline, query, result)
    result.found.sort(key=Found.order, reverse=True)
    del result.found[query.limit :]
    result.found = [_marked(view, item) for item in result.found]
    return result


def _marked(view: ArchiveView, item: Found) -> Found:
    """Whether the transaction lies on a branch the latest timeline abandoned."""
    latest = max(view.timelines)
    txn = item.txn
    found = membership(
        view, latest, item.timeline, txn.file, txn.end_pos or txn.pos, txn.gtid or ""
    )
    return replace(item, abandoned=None if found.member is None else not found.member)


def _search(store: ObjectStore, timeline: Timeline, query: Query, result: Result) -> None:
    indexes = timeline.indexes  # listed with the archive: no LIST of its own
    wanted: list[layout.IndexKey] = []
    missing = 0
    for chain in timeline.files().values():
        for seg in chain.segments:
            if seg.size == 0 or not query.covers(seg):
                continue
            index = index_store.covering(seg, indexes)
            if index is None:
                missing += 1
            elif index not in wanted:
                wanted.append(index)
    if missing:
        result.warnings.append(
            f"timeline {timeline.id}: {missing} segment(s) have no change index and were not "
            "searched (backupctl binlog index writes them)"
        )
    seen: set[tuple[str, int]] = set()
    with ThreadPoolExecutor(_PARALLEL_GETS) as pool:
        for found in pool.map(lambda key: _matches(store, key, query), wanted):
            if isinstance(found, str):
                result.warnings.append(found)
                continue
            for txn in found:
                if (txn.file, txn.pos) not in seen:  # overlapping indexes list it twice
                    seen.add((txn.file, txn.pos))
                    result.found.append(Found(timeline.id, txn))


def _matches(store: ObjectStore, key: layout.IndexKey, query: Query) -> list[Transaction] | str:
    try:
        loaded = index_store.load_index(store, key)
    except BackupdError as exc:
        return exc.message
    return [txn for txn in loaded.transactions if query.matches(txn)]


def summary(found: Iterable[Found]) -> str:
    """Text for people: one transaction per line, its statement below it."""
    lines = []
    for item in found:
        doc = item.to_json()
        changes = ", ".join(
            f"{name} " + " ".join(f"{op} {n}" for op, n in counts.items() if n)
            if any(counts.values())
            else name
            for name, counts in doc["tables"].items()
        )
        lines.append(
            f"{doc['commit_time']}  {doc['gtid'] or '-'}  "
            f"tl{doc['timeline']}{_MARKS[item.abandoned]} "
            f"{doc['file']}:{doc['pos']}-{doc['end_pos']}  {doc['kind']}  rows {doc['rows']}"
            + (f"  {changes}" if changes else "")
        )
        if doc["statement"]:
            lines.append(f"    {doc['statement'].splitlines()[0][:160]}")
    return "\n".join(lines) or "no matching transactions"
