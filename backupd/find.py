"""Find transactions in the binlog archive by what they changed: `backupctl find`.

From the repository alone (no daemon, no database), reading only change index objects: one
LIST per timeline, then the index of every segment whose time range can hold a match
(fetched in parallel). Newest first. A segment without an index is reported (it may hold a
match: `backupctl binlog index` writes the missing ones), never silently skipped.

A week holds millions of transactions, so work is spent only where a match can be: an
object whose summary (`index_format`, version 2) rules the query out is skipped after its
small header frame; `--statement` reads the statements frame alone first; the rest is
decoded newest object first, and once `limit` matches are found, objects whose newest
commit is older than the last of them are not decoded at all. The answer is the same as
decoding everything (tests/unit/test_find_fast.py).
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
from backupd.binlog.index_format import Loaded, Summary
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

    def _rows(self, tables: dict[str, list[int]]) -> int:
        """Rows of the selected operations on the selected tables."""
        ops = [i for i, op in enumerate(_ROW_OPS) if not self.ops or op in self.ops]
        return sum(counts[i] for name, counts in tables.items() if self._table(name) for i in ops)

    def _table(self, name: str) -> bool:
        return not self.tables or any(fnmatchcase(name, pattern) for pattern in self.tables)

    def matches(self, txn: Transaction) -> bool:
        return self.matches_fields(txn.commit_time, txn.tables, txn.kind, txn.statement)

    def matches_fields(
        self, commit_time: int, tables: dict[str, list[int]], kind: str, statement: str | None
    ) -> bool:
        """`matches` on a transaction's fields (no Transaction built for one that fails)."""
        if self.since is not None and commit_time < self.since.timestamp():
            return False
        if self.until is not None and commit_time > self.until.timestamp():
            return False
        if self.tables and not any(self._table(name) for name in tables):
            return False
        if self.statement is not None and not self.statement.search(statement or ""):
            return False
        if self.ops and not self._op(tables, kind):
            return False
        return not self.min_rows or self._rows(tables) >= self.min_rows

    def _op(self, tables: dict[str, list[int]], kind: str) -> bool:
        if "ddl" in self.ops and kind == statements.KIND_DDL:
            return True
        return any(
            counts[i]
            for name, counts in tables.items()
            if self._table(name)
            for i, op in enumerate(_ROW_OPS)
            if op in self.ops
        )

    def may_hold(self, summary: Summary) -> bool:
        """Whether an object with this summary can hold a match (False: it cannot)."""
        if not summary.count or not self._may_time(summary):
            return False
        if self.statement is not None and not summary.statements and not self.empty_matches:
            return False
        names = [name for name in summary.tables if self._table(name)]
        if self.tables and not names:
            return False
        if self.ops and not self._may_op(summary, names):
            return False
        ops = [i for i, op in enumerate(_ROW_OPS) if not self.ops or op in self.ops]
        return sum(summary.tables[name][i] for name in names for i in ops) >= self.min_rows

    def _may_time(self, summary: Summary) -> bool:
        if self.since is not None and summary.last_time < self.since.timestamp():
            return False
        return not (self.until is not None and summary.first_time > self.until.timestamp())

    def _may_op(self, summary: Summary, names: list[str]) -> bool:
        if "ddl" in self.ops and statements.KIND_DDL in summary.kinds:
            return True
        row_ops = [i for i, op in enumerate(_ROW_OPS) if op in self.ops]
        return any(summary.tables[name][i] for name in names for i in row_ops)

    @property
    def empty_matches(self) -> bool:
        """The statement pattern matches a transaction without a statement ("")."""
        return self.statement is not None and self.statement.search("") is not None

    def said(self, loaded: Loaded) -> bool:
        """Whether any of an object's statements can match `--statement` (its statements
        frame is decoded only when that can tell)."""
        pattern = self.statement
        if pattern is None or self.empty_matches:
            return True
        words = literals(pattern)
        if words is None:
            return any(text and pattern.search(text) for text in loaded.statements())
        # plain words: one substring search of the whole frame, unparsed (a word has no
        # quote, so a hit never spans two statements; one in an escape or `null` only
        # costs decoding the object)
        hay = loaded.statements_text()
        if hay is None:  # version 1: no frame of its own
            hay = "\n".join(text for text in loaded.statements() if text)
        if pattern.flags & re.IGNORECASE:
            hay = (hay if hay.isascii() else hay.translate(_FOLD)).lower()
        return any(word in hay for word in words)

    def covers(self, seg: layout.SegmentKey) -> bool:
        """Whether a segment's time range can hold a match (its key says the range)."""
        if self.since is not None and seg.last_time < int(self.since.timestamp()):
            return False
        return not (self.until is not None and seg.first_time > self.until.timestamp())


_SPECIAL = frozenset('.^$*+?{}[]\\|()"')
# letters re.IGNORECASE matches to ASCII ones that str.lower() does not lower to them
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})


def literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """The words a pattern like `DROP|ALTER` is an alternation of (lowercased when it ignores
    case), or None when it is any other regular expression: `--statement` then searches a
    whole statements frame with `in` instead of a regex call per statement (a week at 5/s:
    5.4 s -> 1.6 s, docs/benchmarks.md)."""
    if pattern.flags & re.VERBOSE:
        return None
    words = pattern.pattern.split("|")
    plain = (w and w.isascii() and w.isprintable() and not _SPECIAL & set(w) for w in words)
    if not all(plain):
        return None
    return tuple(word.lower() for word in words) if pattern.flags & re.IGNORECASE else tuple(words)


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
    # the indexes are listed with the archive: no LIST of their own
    segments = [
        seg
        for chain in timeline.files().values()
        for seg in chain.segments
        if seg.size > 0 and query.covers(seg)
    ]
    covering = index_store.covering_each(segments, timeline.indexes)
    missing = sum(1 for seg in segments if covering[seg] is None)
    wanted = list(dict.fromkeys(key for seg in segments if (key := covering[seg]) is not None))
    if missing:
        result.warnings.append(
            f"timeline {timeline.id}: {missing} segment(s) have no change index and were not "
            "searched (backupctl binlog index writes them)"
        )
    found: dict[tuple[str, int], Found] = {}  # overlapping indexes list a transaction twice

    def take(outcome: list[Transaction] | str) -> None:
        if isinstance(outcome, str):
            result.warnings.append(outcome)
            return
        for txn in outcome:
            found.setdefault((txn.file, txn.pos), Found(timeline.id, txn))

    later: list[tuple[int, layout.IndexKey]] = []  # (newest commit, key): decoded below
    with ThreadPoolExecutor(_PARALLEL_GETS) as pool:
        for key, outcome in zip(
            wanted, pool.map(lambda k: _screen(store, k, query), wanted), strict=True
        ):
            if isinstance(outcome, int):
                later.append((outcome, key))
            elif outcome is not None:
                take(outcome)
        later.sort(key=lambda item: item[0], reverse=True)
        while later:
            if len(found) >= query.limit:
                kth = sorted(found.values(), key=Found.order, reverse=True)[query.limit - 1]
                if later[0][0] < kth.txn.commit_time:
                    break  # nothing older can rank among the first `limit`
            batch, later = later[:_PARALLEL_GETS], later[_PARALLEL_GETS:]
            for outcome in pool.map(lambda item: _matches(store, item[1], query), batch):
                take(outcome)
    result.found.extend(found.values())


def _screen(
    store: ObjectStore, key: layout.IndexKey, query: Query
) -> int | list[Transaction] | str | None:
    """Read an object's header: None when it cannot hold a match, its newest commit time
    when it may (decoded later, newest first), or (version 1, no summary) its matches."""
    try:
        loaded = index_store.open_index(store, key)
        if loaded.summary is None:
            return _matching(loaded, query)
        if not query.may_hold(loaded.summary) or not query.said(loaded):
            return None
        return loaded.summary.last_time
    except BackupdError as exc:
        return exc.message
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # a frame read on demand
        return f"change index {key.key} is unreadable: {exc}"


def _matches(store: ObjectStore, key: layout.IndexKey, query: Query) -> list[Transaction] | str:
    try:
        return _matching(index_store.open_index(store, key), query)
    except BackupdError as exc:
        return exc.message
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # a frame read on demand
        return f"change index {key.key} is unreadable: {exc}"


def _matching(loaded: Loaded, query: Query) -> list[Transaction]:
    return loaded.select(query.matches_fields)


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
