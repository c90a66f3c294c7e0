"""The change index on byte-built events: row counts, transactions across segments, DDL,
secrets masked, the stored object, compaction's merged index, retention, backfill, find."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from pathlib import Path

import pytest

from backupd.binlog import events as ev
from backupd.binlog import index_format, index_store, layout, rows, statements
from backupd.binlog.archive import Archive, History
from backupd.binlog.change_index import Indexer, IndexObject, Transaction
from backupd.binlog.compactor import compact_file
from backupd.binlog.extent import Extent
from backupd.binlog.index_backfill import backfill
from backupd.binlog.index_batcher import IndexBatcher, pending_name
from backupd.binlog.index_format import decode, encode
from backupd.binlog.index_stage import IndexStage
from backupd.binlog.retention import delete_files, list_archive
from backupd.binlog.segmenter import Segmenter
from backupd.binlog.spool import Spool, SpoolEntry
from backupd.binlog.uploader import Target
from backupd.binlog.uploader import encode as encode_segment
from backupd.durable import write_file
from backupd.find import Query, find
from backupd.storage.filestore import FileStore
from tests.binlog_fakes import FakeFile, lenenc, query_body

# id INT NOT NULL, name VARCHAR(20) NULL, note BLOB NULL, price DECIMAL(10,2) NULL
TYPES = bytes([3, 15, 252, 246])
META = bytes([20, 0, 2, 10, 2])
NULLABLE = 0b1110
TABLE_ID = 42


def table_map(db: str = "shop", table: str = "orders") -> bytes:
    return (
        TABLE_ID.to_bytes(6, "little")
        + b"\x01\x00"
        + bytes([len(db)])
        + db.encode()
        + b"\0"
        + bytes([len(table)])
        + table.encode()
        + b"\0"
        + lenenc(len(TYPES))
        + TYPES
        + lenenc(len(META))
        + META
        + bytes([NULLABLE])
    )


def row(ident: int, name: str | None, note: bytes | None, price: bool) -> bytes:
    nulls = (name is None) << 1 | (note is None) << 2 | (not price) << 3
    out = bytes([nulls]) + struct.pack("<i", ident)
    if name is not None:
        out += bytes([len(name)]) + name.encode()
    if note is not None:
        out += struct.pack("<H", len(note)) + note
    if price:
        out += bytes(5)
    return out


def rows_body(images: list[bytes], update: bool = False, v2: bool = False) -> bytes:
    extra = struct.pack("<H", 2) if v2 else b""
    bitmaps = b"\x0f\x0f" if update else b"\x0f"
    return (
        TABLE_ID.to_bytes(6, "little")
        + b"\x01\x00"
        + extra
        + lenenc(4)
        + bitmaps
        + b"".join(images)
    )


def dml(fake: FakeFile, code: int, images: list[bytes], statement: bytes = b"") -> None:
    """A MariaDB row transaction: GTID, annotate, table map, one row event, XID."""
    fake.seq += 1
    fake.timestamp += 1
    fake.add(ev.MARIADB_GTID, struct.pack("<QIB", fake.seq, 0, 0) + bytes(3))
    if statement:
        fake.add(ev.MARIADB_ANNOTATE_ROWS, statement)
    fake.add(rows.TABLE_MAP, table_map())
    fake.add(code, rows_body(images, update=code in (24, 31), v2=code >= 30))
    fake.add(ev.XID, struct.pack("<Q", fake.seq))


def ddl(fake: FakeFile, statement: bytes) -> None:
    fake.seq += 1
    fake.timestamp += 1
    fake.add(ev.MARIADB_GTID, struct.pack("<QIB", fake.seq, 0, 1) + bytes(3))
    fake.add(ev.QUERY, query_body(statement))


def workload() -> FakeFile:
    fake = FakeFile("mysql-bin.000001")
    dml(fake, 23, [row(1, "a", b"x", True), row(2, None, None, False), row(3, "ccc", None, True)])
    dml(fake, 31, [row(1, "a", b"x", True) + row(1, "b", b"yy", True)])
    dml(fake, 25, [row(n, "gone", None, False) for n in range(50)], b"DELETE FROM orders")
    ddl(fake, b"CREATE USER 'app'@'%' IDENTIFIED BY 'hunter2'")
    ddl(fake, b"ALTER TABLE orders DROP COLUMN note")
    fake.rotate("mysql-bin.000002")
    return fake


def index_whole(fake: FakeFile) -> list[Transaction]:
    data = bytes(fake.data)
    return Indexer().index(Extent(fake.name, 0, len(data), 0, 0, "", "", "eof"), data)


def test_rows_are_counted_per_table_and_operation() -> None:
    found = index_whole(workload())
    assert [t.kind for t in found] == ["dml", "dml", "dml", "ddl", "ddl"]
    assert [t.tables for t in found[:3]] == [
        {"shop.orders": [3, 0, 0]},
        {"shop.orders": [0, 1, 0]},
        {"shop.orders": [0, 0, 50]},
    ]
    assert [t.gtid for t in found] == [f"0-1-{n}" for n in range(1, 6)]
    assert found[2].statement == "DELETE FROM orders"
    assert found[4].tables == {"t.orders": [0, 0, 0]}  # the QUERY's default database
    first = found[0]
    assert first.pos < first.end_pos == found[1].pos
    assert first.commit_time == 1_700_000_001


def test_a_row_event_that_does_not_end_at_a_row_is_refused() -> None:
    _table_id, table = rows.parse_table_map(table_map())
    body = rows_body([row(1, "a", None, True)])[:-2]
    with pytest.raises(rows.RowsError):
        rows.count_rows(body, 23, {TABLE_ID: table})


def test_a_transaction_cut_by_a_mid_segment_is_indexed_where_it_commits() -> None:
    fake = workload()
    data = bytes(fake.data)
    cut = next(start for start, raw in fake.events if raw[4] == 25)  # the delete's row event
    indexer = Indexer()
    first = indexer.index(Extent(fake.name, 0, cut, 0, 0, "", "", "mid"), data[:cut])
    second = indexer.index(Extent(fake.name, cut, len(data), 0, 0, "", "", "eof"), data[cut:])
    assert len(first) == 2 and second[0].tables == {"shop.orders": [0, 0, 50]}
    assert second[0].pos < cut < second[0].end_pos


def test_a_segment_from_the_middle_of_a_file_learns_its_checksum_setting() -> None:
    fake = workload()
    data = bytes(fake.data)
    start = fake.events[4][0]  # the second transaction's GTID
    found = Indexer().index(Extent(fake.name, start, len(data), 0, 0, "", "", "eof"), data[start:])
    assert [t.gtid for t in found] == ["0-1-2", "0-1-3", "0-1-4", "0-1-5"]


@pytest.mark.parametrize(
    ("statement", "secret"),
    [
        ("CREATE USER 'app'@'%' IDENTIFIED BY 'hunter2'", "hunter2"),
        ("ALTER USER app@localhost IDENTIFIED VIA ed25519 USING PASSWORD('s3cr3t')", "s3cr3t"),
        ("SET PASSWORD FOR 'a'@'h' = PASSWORD('pw1234')", "pw1234"),
        ("GRANT ALL ON *.* TO 'x'@'y' IDENTIFIED BY PASSWORD '*A1B2C3'", "*A1B2C3"),
        ("CHANGE MASTER TO MASTER_HOST='db1', MASTER_PASSWORD='repl-pw'", "repl-pw"),
        ("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'u', PASSWORD 'fdw')", "fdw"),
        ("UPDATE t SET c = AES_ENCRYPT(c, 'aes-key')", "aes-key"),
        ('create user bob identified by "dq-secret"', "dq-secret"),
    ],
)
def test_secrets_never_reach_the_summary(statement: str, secret: str) -> None:
    text = statements.summary(statement)
    assert secret not in text and "'***'" in text


def test_account_names_stay_readable_and_long_statements_are_cut() -> None:
    assert "'app'@'%'" in statements.mask("CREATE USER 'app'@'%' IDENTIFIED BY 'x'")
    long = "ALTER TABLE t COMMENT '" + "x" * 2000 + "'"
    assert len(statements.summary(long)) == statements.MAX_TEXT
    assert statements.summary(long).endswith("...")
    cut_secret = "x" * (statements.MAX_TEXT - 20) + " IDENTIFIED BY 'the-secret-at-the-cut'"
    assert "the-secret" not in statements.summary("CREATE USER u " + cut_secret)


def test_the_stored_index_holds_no_secret_and_checks_its_checksum() -> None:
    found = index_whole(workload())
    obj = IndexObject("mysql-bin.000001", 0, 100, found)
    body = encode(obj)
    assert body == encode(obj)  # deterministic: the same segment, the same key
    stored = index_format.text_of(body)
    assert b"hunter2" not in stored and b"'***'" in stored  # the statements frame was read
    sha = hashlib.sha256(body).hexdigest()
    back = decode(body, sha)
    assert [t.to_list() for t in back.transactions] == [t.to_list() for t in found]
    with pytest.raises(ValueError, match="sha256"):
        decode(body, "0" * 64)


def archive_with_index(tmp_path: Path, store: FileStore, fake: FakeFile, stream: str) -> int:
    """Segment, index and store `fake` as the daemon does (index after its segment)."""
    seg = Segmenter(fake.name, 4, 0.0, 200)
    indexer = Indexer()
    count = 0
    for raw in fake.stream():
        for segment in seg.feed(raw, 1.0):
            encoded = encode_segment(stream, segment.extent, segment.data, "zstd", 3)
            store.put(encoded.key.key, encoded.body)
            txns = indexer.index(segment.extent, segment.data)
            obj = IndexObject(segment.file, segment.start, segment.end, txns)
            index_store.store_index(store, stream, obj)
            count += 1
    return count


def begin_timeline(store: FileStore, cluster: str = "c") -> str:
    archive = Archive(store, cluster)
    archive.begin(History(1, layout.timeline_stream(cluster, 1), "start", "1", 1.0))
    return layout.timeline_stream(cluster, 1)


def test_compaction_merges_the_parts_indexes(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    stream = begin_timeline(store)
    fake = workload()
    assert archive_with_index(tmp_path, store, fake, stream) > 3
    key = compact_file(Target(lambda: store, stream, "zstd", 3), stream, fake.name)
    assert key is not None
    keys = [info.key for info in store.list(layout.file_prefix(stream, fake.name))]
    indexes = index_store.indexes_of(keys)
    assert len(indexes) == 1 and indexes[0].covers(key)
    merged = index_store.load_index(store, indexes[0]).transactions
    assert [t.to_list() for t in merged] == [t.to_list() for t in index_whole(fake)]


def test_retention_knows_index_keys_and_deletes_them_with_the_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    stream = begin_timeline(store)
    archive_with_index(tmp_path, store, workload(), stream)
    listing = list_archive(store)
    assert listing.strangers == []
    assert [f.file for f in listing.files] == ["mysql-bin.000001"]
    assert any("/index/" in info.key for info in store.list(f"binlog/{stream}/"))
    assert delete_files(store, listing.files) == []
    assert list(store.list(f"binlog/{stream}/")) == []
    only_index = index_store.store_index(store, stream, IndexObject("mysql-bin.000002", 0, 9, []))
    assert [f.file for f in list_archive(store).files] == ["mysql-bin.000002"]  # still found
    assert list_archive(store).strangers == [] and only_index.key


def test_backfill_indexes_what_has_no_index_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    stream = begin_timeline(store)
    fake = workload()
    count = archive_with_index(tmp_path, store, fake, stream)
    before = sorted(info.key for info in store.list(f"binlog/{stream}/") if "/index/" in info.key)
    for key in before[1::2]:
        store.delete(key)
    report = backfill(store)
    assert report.indexed == len(before[1::2]) and not report.failed
    assert report.indexed + report.present == count
    after = sorted(info.key for info in store.list(f"binlog/{stream}/") if "/index/" in info.key)
    assert after == before  # the same objects, byte for byte (same keys)
    assert backfill(store).indexed == 0


def test_find_newest_first_with_filters(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    stream = begin_timeline(store)
    archive_with_index(tmp_path, store, workload(), stream)
    deletes = find(store, "", Query(tables=("shop.*",), ops=("delete",), min_rows=10)).found
    assert [f.txn.gtid for f in deletes] == ["0-1-3"]
    doc = deletes[0].to_json()
    assert sorted(doc) == sorted(
        [
            "gtid",
            "timeline",
            "file",
            "pos",
            "end_pos",
            "commit_time",
            "tables",
            "rows",
            "kind",
            "statement",
            "abandoned",
        ]
    )
    assert doc["abandoned"] is False  # one timeline: nothing abandoned
    assert doc["tables"] == {"shop.orders": {"insert": 0, "update": 0, "delete": 50}}
    assert doc["commit_time"] == "2023-11-14T22:13:23Z" and doc["rows"] == 50
    everything = find(store, "", Query()).found
    assert [f.txn.gtid for f in everything] == [f"0-1-{n}" for n in range(5, 0, -1)]
    ddl_found = find(store, "", Query(ops=("ddl",), statement=re.compile("user", re.IGNORECASE)))
    assert [f.txn.gtid for f in ddl_found.found] == ["0-1-4"]
    assert "hunter2" not in json.dumps([f.to_json() for f in everything])
    assert find(store, "", Query(min_rows=51)).found == []


def test_find_reports_segments_without_an_index(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    stream = begin_timeline(store)
    archive_with_index(tmp_path, store, workload(), stream)
    victim = next(info.key for info in store.list(f"binlog/{stream}/") if "/index/" in info.key)
    store.delete(victim)
    result = find(store, "", Query())
    assert result.warnings and "no change index" in result.warnings[0]


def test_the_index_stage_uploads_at_once_and_removes_the_entry_when_both_are_done(
    tmp_path: Path,
) -> None:
    stop = threading.Event()
    spool = Spool(tmp_path / "spool", 1 << 20, stop)
    spool.recover()
    pending = tmp_path / "pending"
    pending.mkdir()
    handed: list[SpoolEntry] = []
    removed = threading.Event()

    def submit(entry: SpoolEntry) -> bool:
        handed.append(entry)
        return True

    def remove(entry: SpoolEntry) -> None:
        spool.remove(entry)
        removed.set()

    stage = IndexStage(submit, remove, lambda: "c/tl000001", pending, stop)
    stage.start()
    try:
        fake = workload()
        seg = Segmenter(fake.name, 4, 3600.0, 1 << 20)
        segments = [s for raw in fake.stream() for s in seg.feed(raw, 1.0)]
        assert len(segments) == 1
        entry = spool.write(segments[0])
        assert entry is not None
        assert stage.submit(entry)
        assert handed == [entry]  # the upload does not wait for the index
        stage.uploaded(entry)
        assert removed.wait(60)
        assert not entry.path.exists()
        [index] = list(pending.iterdir())
        assert index.name == pending_name("c/tl000001", entry)
        body = index.read_bytes()
        assert len(decode(body, hashlib.sha256(body).hexdigest()).transactions) == 5
    finally:
        stop.set()
        stage.join(5)


def test_the_batcher_stores_consecutive_segments_as_one_object(tmp_path: Path) -> None:
    """Stored segments' indexes wait; a closed file's run becomes one object, and only then
    is the file handed on (to compaction); what waits survives a restart."""
    store = FileStore(tmp_path / "repo")
    stop = threading.Event()
    spool = Spool(tmp_path / "spool", 1 << 20, stop)
    spool.recover()
    fake = workload()
    seg = Segmenter(fake.name, 4, 0.0, 200)
    indexer = Indexer()
    entries = []
    bodies: dict[SpoolEntry, bytes] = {}
    for segment in (s for raw in fake.stream() for s in seg.feed(raw, 1.0)):
        entry = spool.write(segment)
        assert entry is not None
        txns = indexer.index(entry.extent, entry.read())
        bodies[entry] = encode(IndexObject(entry.file, entry.start, entry.end, txns))
        entries.append(entry)
    closed: list[tuple[str, str]] = []
    handed = threading.Event()

    def file_closed(stream: str, file: str) -> None:
        closed.append((stream, file))
        handed.set()

    batcher = IndexBatcher(lambda: store, spool.directory, stop, 3600.0, file_closed)
    batcher.directory.mkdir()
    for entry in entries[:2]:  # what a previous run left pending
        write_file(batcher.directory / pending_name("c/tl000001", entry), bodies[entry])
    assert len(batcher.pending()) == 2
    assert batcher.flush() == 1  # a restart stores what the last run left, first
    for entry in entries[2:]:
        write_file(batcher.directory / pending_name("c/tl000001", entry), bodies[entry])
    batcher.start()
    try:
        batcher.close_file("c/tl000001", fake.name)
        assert handed.wait(30)
    finally:
        stop.set()
        batcher.join(10)
    assert closed == [("c/tl000001", fake.name)]
    keys = sorted(index_store.indexes_of(info.key for info in store.list("binlog/")))
    # the two left by the first run (stored at start), then the rest of the file as one
    assert [(k.start, k.end) for k in keys] == [
        (0, entries[1].end),
        (entries[2].start, len(fake.data)),
    ]
    assert batcher.pending() == []
    merged = index_store.merged(index_store.load_index(store, k) for k in keys)
    assert [t.to_list() for t in merged] == [t.to_list() for t in index_whole(fake)]


def test_column_widths_follow_the_table_map_metadata() -> None:
    """One column of each kind whose width depends on its metadata (as mariadbd 10.11 writes
    them; checked against `mariadb-binlog -v` row counts on a real file)."""
    types = bytes([254, 254, 254, 16, 246, 18, 19, 17, 4, 5, 252, 15])
    meta = bytes([0xEE, 144, 247, 1, 248, 2, 5, 1, 20, 6, 6, 3, 2, 4, 8, 4, 0x2C, 1])
    body = (
        TABLE_ID.to_bytes(6, "little")
        + b"\x01\x00\x01d\x00\x01t\x00"
        + lenenc(len(types))
        + types
        + lenenc(len(meta))
        + meta
        + b"\xff\x0f"
    )
    _table_id, table = rows.parse_table_map(body)
    assert table.name == "d.t"
    assert table.widths == (
        (0, 2),  # CHAR(100) utf8mb4: 400 bytes, length bits in the first metadata byte
        (1, 0),  # ENUM
        (2, 0),  # SET of up to 16 members
        (2, 0),  # BIT(13)
        (10, 0),  # DECIMAL(20,6)
        (8, 0),  # DATETIME(6)
        (5, 0),  # TIME(3)
        (5, 0),  # TIMESTAMP(2)
        (4, 0),  # FLOAT
        (8, 0),  # DOUBLE
        (0, 4),  # LONGBLOB / MariaDB JSON
        (0, 2),  # VARCHAR(300)
    )
