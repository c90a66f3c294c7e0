"""Benchmark: `backupctl find` over a week of archive ("answers in seconds", issue 13).

Method. A synthetic but realistic WEEK of one timeline's archive is written into a file://
repository with backupd's own key and index code (`layout.SegmentKey`/`IndexKey`,
`index_store.store_index`, the timeline's history object through `Archive.begin`). Segment
objects are empty files: `find` never reads a segment (it lists them for their keys'
byte and time ranges, then GETs index objects only; the bench counts the GETs to prove it).

The workload is the user story's web shop (one MariaDB server behind one web server):
Poisson arrivals at `--tps` transactions/s on average, following a day curve (night 0.2x,
evening peak 1.8x). Per transaction, like a shop's: checkout (orders 1 row, order_items 1-3,
products 1-3 updated, payments 1), cart insert/update/delete (1-3 rows), session update,
customer insert/update, order status update; MariaDB annotate events give each its
statement text. A few DDL a week (ALTER/CREATE INDEX/DROP a staging table, a CREATE USER
whose password the index masks), and one accidental `DELETE FROM shop.orders WHERE ...` of
thousands of rows on day 5. Binlog byte positions follow the events' sizes (GTID, annotate,
table map per table, row events with full row images, XID): about 740 bytes a transaction.

Shapes (`--shape`), what the daemon leaves behind after a week:
- `daemon`: segments cut every `flush_seconds` (1 s, so one per active second), change
  index stored in batches every `index_flush_seconds` (60 s), at each file's close, and
  whenever a batch would span half `binlog.rollup_bytes` (32 MiB). Each time another
  `rollup_bytes` are indexed, roll-up folds what is ready, planned by backupd's own
  `rollup.plan`, and deletes what the previous fold replaced; a closed file (1 GiB
  `max_binlog_size`, larger than the 256 MiB that compaction takes whole) is rolled up to
  its end.
- `unrolled`: the same with `rollup_bytes = 0` (before roll-up): files over 256 MiB keep one
  segment per second.
- `compacted`: every closed file one segment [0, size) plus its merged index and manifest
  (what compaction leaves for files up to `MAX_BYTES`, 256 MiB, with roll-up off);
  the newest file as in `daemon`.

Each query runs in a new process (cold: no object cached in memory; the OS page cache holds
the freshly written files, so on S3 add the LIST pages and GETs at its latency):
`--table shop.orders --op delete --min-rows 100`, a one-hour `--since/--until` window,
`--statement 'DROP|ALTER'`, and no filter (default limit 50). Reported per query: seconds
(inside `find`, its CPU time — steadier than wall time on a shared host — and the whole
process), objects read (GETs), bytes read, LIST calls, the
number of transactions found and the first one's GTID (the accident must be the first hit of
the first query). Also, in a new process, what the daemon's hole check reads every
`binlog.check_seconds` (the whole archive: `Archive.read` and each file's chain): seconds,
CPU seconds, LIST calls and keys.

Prints one JSON document. Run: `.venv/bin/python -m bench.find_archive [--tps 5 50]
[--shape daemon unrolled compacted] [--keep DIR]`. Building takes about 1.5 minutes per 3M
transactions (14 minutes at 50/s); `--keep` reuses a build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupd.binlog import index_store, layout, rollup, statements
from backupd.binlog.archive import Archive
from backupd.binlog.change_index import IndexObject, Transaction
from backupd.binlog.extent import Extent
from backupd.log import configure_logging
from backupd.storage.filestore import FileStore

CLUSTER = "shop-db"
WEEK = 7 * 86400
END = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp())  # the archive's newest second
START = END - WEEK
MAX_BINLOG_SIZE = 1 << 30
INDEX_FLUSH_SECONDS = 60
ROLLUP_BYTES = 32 * 1024 * 1024  # binlog.rollup_bytes' default
FILE_HEADER = 4 + 256 + 40  # magic, format description, GTID list and checkpoint events
GTID_EVENT, XID_EVENT, ROTATE_EVENT = 42, 31, 48
ACCIDENT_ROWS = 4_000
DML = statements.KIND_DML


def day_factor(second: int) -> float:
    """The shop's load over a day (average 1): quiet at night, peak in the evening."""
    hour = (second % 86400) / 3600
    return 1.0 + 0.8 * math.sin((hour - 14) / 24 * 2 * math.pi)


@dataclass
class Shop:
    """Random transactions of the web shop, with their binlog size."""

    rng: random.Random
    order: int = 100_000

    def transaction(self) -> tuple[dict[str, list[int]], str, int]:
        """(tables -> [ins, upd, del], annotate statement, binlog bytes)."""
        r = self.rng.random()
        rng = self.rng
        if r < 0.30:
            self.order += 1
            items = rng.randint(1, 3)
            tables = {
                "shop.orders": [1, 0, 0],
                "shop.order_items": [items, 0, 0],
                "shop.products": [0, items, 0],
                "shop.payments": [1, 0, 0],
            }
            text = (
                "INSERT INTO shop.orders (customer_id, total, status, created) VALUES "
                f"({rng.randint(1, 90_000)}, {rng.randint(500, 40_000) / 100}, 'new', NOW())"
            )
        elif r < 0.62:
            n = rng.randint(1, 2)
            tables = {"shop.carts": [n, 0, 0] if rng.random() < 0.6 else [0, n, 0]}
            text = (
                f"INSERT INTO shop.carts (session_id, product_id, qty) VALUES "
                f"('{rng.getrandbits(64):016x}', {rng.randint(1, 5000)}, {n}) "
                "ON DUPLICATE KEY UPDATE qty = qty + 1"
            )
        elif r < 0.82:
            tables = {"shop.sessions": [0, 1, 0]}
            text = f"UPDATE shop.sessions SET seen = NOW() WHERE id = '{rng.getrandbits(64):016x}'"
        elif r < 0.90:
            tables = {"shop.customers": [1, 0, 0] if rng.random() < 0.4 else [0, 1, 0]}
            customer = rng.randint(1, 90_000)
            text = f"UPDATE shop.customers SET last_login = NOW() WHERE id = {customer}"
        elif r < 0.96:
            n = rng.randint(1, 3)
            tables = {"shop.carts": [0, 0, n]}
            text = f"DELETE FROM shop.carts WHERE session_id = '{rng.getrandbits(64):016x}'"
        else:
            tables = {"shop.orders": [0, 1, 0]}
            text = (
                "UPDATE shop.orders SET status = 'shipped' WHERE id = "
                f"{self.order - rng.randint(0, 500)}"
            )
        rows = sum(sum(c) for c in tables.values()) + sum(c[1] for c in tables.values())
        size = GTID_EVENT + 23 + len(text) + len(tables) * (70 + 40) + rows * 90 + XID_EVENT
        return tables, text, size


DDL = (
    "ALTER TABLE shop.products ADD COLUMN weight_grams INT NULL",
    "CREATE INDEX idx_orders_status ON shop.orders (status)",
    "CREATE TABLE shop.import_staging (sku VARCHAR(64), price DECIMAL(10,2))",
    "DROP TABLE shop.import_staging",
    "CREATE USER 'report'@'10.0.%' IDENTIFIED BY 'S3cret-pw'",
    "ALTER TABLE shop.customers MODIFY email VARCHAR(320) NOT NULL",
)


@dataclass
class Builder:
    """Writes the week as the daemon would have left it."""

    store: FileStore
    stream: str
    shape: str
    rng: random.Random
    file_number: int = 1
    pos: int = FILE_HEADER
    gtid: int = 1000
    pending: list[tuple[Extent, list[Transaction]]] = field(default_factory=list)
    batches: list[IndexObject] = field(default_factory=list)  # the current file's (compacted)
    file_segments: list[Extent] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    live: list[layout.SegmentKey] = field(default_factory=list)  # the file's, not folded
    indexes: dict[layout.IndexKey, IndexObject] = field(default_factory=dict)  # the file's
    replaced: list[str] = field(default_factory=list)  # deleted by the next roll-up
    ready: int = 0  # bytes indexed since the last roll-up
    accident_gtid: str = ""

    @property
    def file(self) -> str:
        return f"mysql-bin.{self.file_number:06d}"

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def second(self, t: int, txns: list[tuple[dict[str, list[int]], str, int, str]]) -> None:
        """One second's transactions: one segment (and a rotation when the file is full)."""
        start = 0 if self.pos == FILE_HEADER else self.pos
        done: list[Transaction] = []
        for tables, text, size, kind in txns:
            self.gtid += 1
            gtid = f"0-1-{self.gtid}"
            txn = Transaction(gtid, self.file, self.pos, self.pos + size, t, tables, kind, text)
            if tables.get("shop.orders", [0, 0, 0])[2] >= ACCIDENT_ROWS:
                self.accident_gtid = gtid
            done.append(txn)
            self.pos += size
        self.count("transactions", len(done))
        rotate = self.pos >= MAX_BINLOG_SIZE
        if rotate:
            self.pos += ROTATE_EVENT
        first, last = done[0].gtid or "", done[-1].gtid or ""
        kind = "eof" if rotate else "tx"
        extent = Extent(self.file, start, self.pos, t, t, first, last, kind)
        self.segment(extent)
        self.pending.append((extent, done))
        if rotate:
            self.close_file()

    def segment(self, extent: Extent) -> None:
        if self.shape == "compacted":
            self.file_segments.append(extent)  # written at the close: whole, or as they are
            return
        key = _key(self.stream, extent)
        _touch(self.store, key.key)
        self.live.append(key)

    def flush(self) -> None:
        """The batcher's flush: the pending segments' indexes as one object per run (with
        roll-up, runs spanning at most half `rollup_bytes`); then roll-up when due."""
        cap = ROLLUP_BYTES // 2 if self.shape == "daemon" else 0
        while self.pending:
            n = 1
            first = self.pending[0][0]
            while n < len(self.pending) and (
                not cap or self.pending[n][0].end - first.start <= cap
            ):
                n += 1
            batch, self.pending = self.pending[:n], self.pending[n:]
            obj = IndexObject(
                first.file, first.start, batch[-1][0].end, [t for _e, p in batch for t in p]
            )
            if self.shape == "compacted":
                self.batches.append(obj)  # stored at the close: merged, or as they are
            else:
                self.store_index(obj)
                self.ready += obj.end - obj.start
        if self.shape == "daemon" and self.ready >= ROLLUP_BYTES:
            self.roll_up(closed=False)

    def store_index(self, obj: IndexObject) -> layout.IndexKey:
        key = index_store.store_index(self.store, self.stream, obj)
        self.indexes[key] = obj
        return key

    def roll_up(self, closed: bool) -> None:
        """What `rollup.roll_up` does to the file: delete what the last fold replaced, fold
        the runs `rollup.plan` picks (merged index, then the object)."""
        self.ready = 0
        for key in self.replaced:
            (self.store.root / key).unlink()
        self.replaced = []
        for run in rollup.plan(self.live, list(self.indexes), ROLLUP_BYTES, closed, True):
            if len(run.indexes) > 1:  # one is the run's index already
                txns = index_store.merged(self.indexes.pop(k) for k in run.indexes)
                self.store_index(IndexObject(self.file, run.start, run.end, txns))
                self.replaced += [k.key for k in run.indexes]
            fold = _key(self.stream, rollup.joined_extent(run.parts))
            _touch(self.store, fold.key)
            at = self.live.index(run.parts[0])
            self.live[at : at + len(run.parts)] = [fold]
            self.replaced += [seg.key for seg in run.parts]
            self.count("folds")

    def close_file(self, newest: bool = False) -> None:
        """The file ends: its indexes stored at once; compacted, it becomes one segment and
        one index (the newest file, still open, stays as segments and batches)."""
        self.flush()
        if self.shape == "compacted" and not newest:
            parts = self.file_segments
            whole = Extent(
                self.file,
                0,
                parts[-1].end,
                parts[0].first_time,
                parts[-1].last_time,
                parts[0].first_gtid,
                parts[-1].last_gtid,
                "eof",
            )
            _touch(self.store, _segment_key(self.stream, whole))
            txns = [txn for batch in self.batches for txn in batch.transactions]
            self.store_index(IndexObject(self.file, 0, whole.end, txns))
            self.store.put(layout.manifest_key(self.stream, self.file), b"{}")
        elif self.shape == "compacted":
            for extent in self.file_segments:
                _touch(self.store, _segment_key(self.stream, extent))
            for batch in self.batches:
                self.store_index(batch)
        elif self.shape == "daemon":
            self.roll_up(closed=not newest)  # larger than compaction takes whole: rolled up
            self.roll_up(closed=not newest)  # a minute later: deletes what folds replaced
        self.batches, self.file_segments = [], []
        self.live, self.indexes = [], {}
        self.count("files")
        self.count("binlog_bytes", self.pos)
        self.file_number += 1
        self.pos = FILE_HEADER


def _key(stream: str, extent: Extent) -> layout.SegmentKey:
    raw = f"{extent.file}:{extent.start}-{extent.end}".encode().hex().ljust(64, "0")[:64]
    return layout.SegmentKey(stream, extent, raw, raw[::-1], "zst")


def _segment_key(stream: str, extent: Extent) -> str:
    return _key(stream, extent).key


def _touch(store: FileStore, key: str) -> None:
    path = store.root / key
    try:
        path.touch()
    except FileNotFoundError:
        path.parent.mkdir(parents=True)
        path.touch()


def build(root: Path, tps: float, shape: str, seed: int = 13) -> dict[str, Any]:
    """Write the week; what was written."""
    store = FileStore(root)
    archive = Archive(store, CLUSTER)
    history = archive.new_history(archive.read(), "start", "1")
    archive.begin(history)
    rng = random.Random(seed)
    shop = Shop(rng)
    builder = Builder(store, history.stream, shape, rng)
    accident_at = START + 4 * 86400 + rng.randrange(86400)
    ddl_at = sorted(START + rng.randrange(WEEK) for _ in DDL)
    next_flush = START + INDEX_FLUSH_SECONDS
    began = time.monotonic()
    for t in range(START, END):
        expected = tps * day_factor(t)
        n = _poisson(rng, expected)
        txns = [(*shop.transaction(), DML) for _ in range(n)]
        while ddl_at and ddl_at[0] == t:
            text = statements.summary(DDL[len(DDL) - len(ddl_at)])
            table = statements.ddl_table(text, "shop")
            txns.append(({table: [0, 0, 0]} if table else {}, text, 200, statements.kind(text)))
            ddl_at.pop(0)
        if t == accident_at:
            rows = ACCIDENT_ROWS * max(1, int(tps // 5))
            text = "DELETE FROM shop.orders WHERE created < '2026-11-01'"
            txns.append(({"shop.orders": [0, 0, rows]}, text, 120 + rows * 90, DML))
        if txns:
            builder.second(t, txns)
        if t + 1 >= next_flush:
            builder.flush()
            next_flush += INDEX_FLUSH_SECONDS
    builder.close_file(newest=True)
    keys = [info.key for info in store.list(layout.ROOT + "/")]
    builder.count("segment_objects", sum(1 for k in keys if layout.parse_segment(k)))
    builder.count("index_objects", sum(1 for k in keys if layout.parse_index(k)))
    return {
        "assumed_tps": tps,
        "shape": shape,
        "days": WEEK / 86400,
        "build_seconds": round(time.monotonic() - began, 1),
        "accident_gtid": builder.accident_gtid,
        **builder.counts,
    }


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


QUERIES: dict[str, list[str]] = {
    "mass_delete": ["--table", "shop.orders", "--op", "delete", "--min-rows", "100"],
    "one_hour": ["--since", "2026-11-27T13:00:00Z", "--until", "2026-11-27T14:00:00Z"],
    "ddl_statement": ["--statement", "DROP|ALTER"],
    "no_filter": [],
}


def run_query(root: str, argv: list[str]) -> dict[str, Any]:
    """One cold `find` in this (new) process: its figures."""
    from backupd.find import find
    from backupd.find_ctl import query_of, register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub, [])
    args = parser.parse_args(["find", *argv])
    calls: dict[str, int] = {}
    store = CountingStore(root, calls)
    began, cpu = time.perf_counter(), time.process_time()
    result = find(store, CLUSTER, query_of(args))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {
        "find_seconds": round(seconds, 3),
        "find_cpu_seconds": round(cpu, 3),  # less sensitive to other jobs on a shared host
        "objects_read": calls.get("GetObject", 0),
        "bytes_read": store.bytes_read,
        "lists": calls.get("ListObjectsV2", 0),
        "found": len(result.found),
        "first": result.found[0].txn.gtid if result.found else None,
        "warnings": result.warnings,
    }


def run_check(root: str) -> dict[str, Any]:
    """What the daemon's hole check (every `binlog.check_seconds`) reads: the whole archive,
    then every file's chain. Run in a new process, as `run_query`."""
    calls: dict[str, int] = {}
    store = CountingStore(root, calls)
    began, cpu = time.perf_counter(), time.process_time()
    view = Archive(store, CLUSTER).read()
    holes = [hole for timeline in view.timelines.values() for hole in timeline.holes()]
    return {
        "check_seconds": round(time.perf_counter() - began, 3),
        "check_cpu_seconds": round(time.process_time() - cpu, 3),
        "lists": calls.get("ListObjectsV2", 0),
        "keys": sum(1 for _ in store.list(layout.ROOT + "/")),
        "holes": len(holes),
    }


class CountingStore(FileStore):
    def __init__(self, root: str, calls: dict[str, int]) -> None:
        super().__init__(
            root, on_request=lambda name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
        self.bytes_read = 0

    def get(self, key: str) -> bytes:
        body = super().get(key)
        self.bytes_read += len(body)
        return body


def measure(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    check = subprocess.run(
        [sys.executable, "-m", "bench.find_archive", "--check", str(root)],
        check=True,
        capture_output=True,
        text=True,
    )
    out["hole_check"] = json.loads(check.stdout)
    for name, argv in QUERIES.items():
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.find_archive", "--query", str(root), *argv],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(proc.stdout)
        figures["process_seconds"] = round(time.perf_counter() - began, 3)
        out[name] = {"argv": argv, **figures}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tps", type=float, nargs="+", default=[5.0, 50.0])
    parser.add_argument(
        "--shape", nargs="+", default=["daemon"], choices=["daemon", "unrolled", "compacted"]
    )
    parser.add_argument("--keep", help="build here (or reuse a build here) instead of a temp dir")
    parser.add_argument("--query", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--check", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging(stream=sys.stderr)  # stdout is the JSON document
    if args.query:
        print(json.dumps(run_query(args.query[0], args.query[1:])))
        return
    if args.check:
        print(json.dumps(run_check(args.check)))
        return
    runs = []
    for shape in args.shape:
        for tps in args.tps:
            base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="find-bench-"))
            root = base / f"{shape}-{tps:g}"
            try:
                built = (
                    json.loads((root / "built.json").read_text())
                    if (root / "built.json").exists()
                    else None
                )
                if built is None:
                    root.mkdir(parents=True, exist_ok=True)
                    built = build(root, tps, shape)
                    (root / ".built.json").write_text(json.dumps(built))
                    os.replace(root / ".built.json", root / "built.json")
                runs.append({"archive": built, "queries": measure(root)})
            finally:
                if not args.keep:
                    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"benchmark": "find_archive", "cpus": os.cpu_count(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
