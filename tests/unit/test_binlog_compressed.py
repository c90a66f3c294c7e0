"""MariaDB's compressed binlog events (log_bin_compress): expanded exactly, damaged ones
refused by name, and read by the change index, the archiver's cutter and the restore's
transaction walk as the plain events they stand for.

Two kinds of bytes: events MariaDB 10.11 wrote (`log_bin_compress=ON`,
`log_bin_compress_min_len=10`), kept as hex; and events built from the documented layout
(sql/log_event.cc: one header byte 0x80 | length-bytes, the original length big-endian,
zlib's `compress` output) for every type, with and without checksums.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

import pytest

from backupd.binlog import compressed, rows
from backupd.binlog import events as ev
from backupd.binlog.change_index import Indexer, IndexingError, Transaction
from backupd.binlog.extent import Extent
from backupd.binlog.segmenter import Segmenter
from backupd.errors import UndoRefused
from backupd.restore.endpoint import transactions
from backupd.restore.plan import Position
from backupd.restore.undo import _check_dml
from tests.binlog_fakes import FakeFile, query_body
from tests.unit.test_change_index import dml, row, rows_body, workload

# MariaDB 10.11.19: CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(100)) as
# QUERY_COMPRESSED; then the table map and DELETE_ROWS_COMPRESSED_V1 of
# DELETE FROM shop.t WHERE id > 30 (20 rows, ids 31..50, v 'row-N').
REAL_QUERY = bytes.fromhex(
    "704a0e6ba5010000008a0000004803000000000900000000000000000000230000000000010100002054000000"
    "000603737464042d002d000800811300000000000000008138789c730e72750c7155087174f2715528cec82fd0"
    "2b51d0c84c51f0f40b510808f2f4750c8a54f0768dd451285308730c72f6700cd2303430d0d40400c2290f1aa0"
    "d2c03d"
)
REAL_TABLE_MAP = bytes.fromhex(
    "704a0e6b13010000002f00000061090000000012000000000001000473686f700001740002030f02640002088c263f"
)
REAL_DELETE = bytes.fromhex(
    "704a0e6ba8010000007e000000df09000000001200000000000100020381f0789c3dc6b711c2400000c18f6803"
    "105620c15b99aa9821a1f90b88741b2dfb10c2eefbf98d2571f099a32f74be72f28db39fb8f899ab5fb8f995fb"
    "f61ae97de2e1334f5f187c65f48d979f78fb99e817925fc9db5bfc0316673dd9f58375e3"
)
PLAIN = {165: 2, 166: 23, 167: 24, 168: 25, 169: 30, 170: 31, 171: 32}


def squeeze(data: bytes) -> bytes:
    """A compressed part as MariaDB's binlog_buf_compress writes it."""
    width = max(1, (len(data).bit_length() + 7) // 8)
    return bytes([0x80 | width]) + len(data).to_bytes(width, "big") + zlib.compress(data)


def compressed_rows(images: list[bytes], code: int) -> bytes:
    """The body of a compressed row event: the plain prefix, then the rows squeezed."""
    plain = rows_body(images, update=code in (167, 170), v2=code >= 169)
    prefix = 8 + (2 if code >= 169 else 0) + 1 + (2 if code in (167, 170) else 1)
    return plain[:prefix] + squeeze(plain[prefix:])


def compressed_query(statement: bytes) -> bytes:
    plain = query_body(statement)
    return plain[: len(plain) - len(statement)] + squeeze(statement)


def test_real_events_expand_to_the_plain_events_mariadb_reads() -> None:
    code, query = compressed.expand(REAL_QUERY, ev.CHECKSUM_CRC32)
    assert code == ev.QUERY
    ev.verify(query, ev.CHECKSUM_CRC32)  # its size and a fresh CRC32
    text = b"CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(100))"
    assert ev.query_text(query, ev.CHECKSUM_CRC32) == text
    before, after = ev.Header.parse(REAL_QUERY), ev.Header.parse(query)
    assert (after.timestamp, after.server_id, after.log_pos) == (1796098672, 1, 840)
    assert (before.timestamp, before.server_id, before.log_pos) == (1796098672, 1, 840)
    prefix = len(query) - ev.CHECKSUM_SIZE - len(text)  # post-header, status vars, database
    assert query[ev.HEADER_SIZE : prefix] == REAL_QUERY[ev.HEADER_SIZE : prefix]
    code, delete = compressed.expand(REAL_DELETE, ev.CHECKSUM_CRC32)
    assert code == rows.DELETE_V1
    ev.verify(delete, ev.CHECKSUM_CRC32)
    table_id, table = rows.parse_table_map(REAL_TABLE_MAP[ev.HEADER_SIZE : -ev.CHECKSUM_SIZE])
    body = delete[ev.HEADER_SIZE : -ev.CHECKSUM_SIZE]
    assert rows.count_rows(body, code, {table_id: table}) == ("shop.t", rows.DELETE, 20)
    assert b"row-31" in body and b"row-50" in body


@pytest.mark.parametrize("code", sorted(compressed.ROWS))
@pytest.mark.parametrize("checksum", [True, False])
def test_every_compressed_row_type_expands_to_its_plain_type(code: int, checksum: bool) -> None:
    images = [row(n, "x" * n, None, True) for n in range(1, 40)]
    if code in (167, 170):
        images = [a + b for a, b in itertools.pairwise(images)]
    raw = ev.build_event(code, compressed_rows(images, code), 999, checksum=checksum)
    alg = ev.CHECKSUM_CRC32 if checksum else ev.CHECKSUM_OFF
    plain_code, plain = compressed.expand(raw, alg)
    expected = rows_body(images, update=code in (167, 170), v2=code >= 169)
    assert plain_code == PLAIN[code]
    assert plain == ev.build_event(plain_code, expected, 999, checksum=checksum)


def test_a_compressed_query_keeps_its_database_and_status_variables() -> None:
    statement = b"ALTER TABLE orders ADD COLUMN note TEXT"
    raw = ev.build_event(165, compressed_query(statement), 500, timestamp=7)
    code, plain = compressed.expand(raw, ev.CHECKSUM_CRC32)
    assert (code, plain) == (ev.QUERY, ev.build_event(ev.QUERY, query_body(statement), 500, 7))


def damaged() -> list[tuple[str, bytes, str]]:
    statement = b"DROP TABLE IF EXISTS shop.old_orders"
    good = compressed_query(statement)
    head = len(good) - len(squeeze(statement))
    part = squeeze(statement)
    flipped = part[:10] + bytes([part[10] ^ 0xFF]) + part[11:]
    return [
        ("flipped byte", good[:head] + flipped, "does not inflate"),
        ("cut stream", good[:-6], "cut"),
        ("longer length", good[:head] + b"\x81\x40" + part[2:], "announces 64 bytes"),
        ("other algorithm", good[:head] + b"\x91" + part[1:], "unknown compression header"),
        ("not compressed", good[:head] + b"\x01" + part[1:], "unknown compression header"),
        ("no part", good[:head], "holds no compressed part"),
        ("header only", good[:head] + b"\x82\x01", "ends inside its header"),
    ]


@pytest.mark.parametrize(
    ("body", "message"), [d[1:] for d in damaged()], ids=[d[0] for d in damaged()]
)
def test_a_damaged_compressed_event_is_refused_by_name(body: bytes, message: str) -> None:
    raw = ev.build_event(165, body, 500)
    with pytest.raises(ev.EventError, match=message):
        compressed.expand(raw, ev.CHECKSUM_CRC32)


def test_a_row_event_cut_inside_its_header_is_refused() -> None:
    raw = ev.build_event(168, bytes(9), 500)
    with pytest.raises(ev.EventError, match="compressed event type 168"):
        compressed.expand(raw, ev.CHECKSUM_CRC32)


COMPRESSED = {plain: code for code, plain in PLAIN.items()}


def compressed_workload(checksum: bool = True) -> FakeFile:
    """`workload()` (test_change_index) with every row event and statement compressed, as
    MariaDB writes it with log_bin_compress=ON: v1 insert, v2 update, v1 delete, two DDL."""
    plain = workload()
    fake = FakeFile(plain.name, checksum=checksum)
    for _start, raw in plain.events[1:]:  # after its format description
        code, body = raw[4], raw[ev.HEADER_SIZE : -ev.CHECKSUM_SIZE]
        fake.timestamp = ev.Header.parse(raw).timestamp
        if code in rows.ROW_EVENTS:
            prefix = 8 + (2 if code >= 30 else 0) + 1 + (2 if code in (24, 31) else 1)
            fake.add(COMPRESSED[code], body[:prefix] + squeeze(body[prefix:]))
        elif code == ev.QUERY:
            fake.add(165, compressed_query(ev.query_text(raw, ev.CHECKSUM_CRC32)))
        else:
            fake.add(code, body)
    return fake


def index(fake: FakeFile) -> list[Transaction]:
    data = bytes(fake.data)
    return Indexer().index(Extent(fake.name, 0, len(data), 0, 0, "", "", "eof"), data)


def summary(found: list[Transaction]) -> list[tuple[object, ...]]:
    return [(t.gtid, t.kind, t.tables, t.statement, t.commit_time) for t in found]


@pytest.mark.parametrize("checksum", [True, False])
def test_the_index_of_compressed_events_equals_the_index_of_plain_ones(checksum: bool) -> None:
    fake = compressed_workload(checksum)
    found = index(fake)
    assert summary(found) == summary(index(workload()))
    assert found[3].statement is not None and "hunter2" not in found[3].statement
    ends = [start + len(raw) for start, raw in fake.events if raw[4] in (ev.XID, 165)]
    assert [t.end_pos for t in found] == ends  # where the compressed events end
    assert [t.pos for t in found[1:]] == [t.end_pos for t in found[:-1]]


def test_the_index_names_a_damaged_compressed_event() -> None:
    fake = FakeFile("mysql-bin.000001")
    dml(fake, 23, [row(1, "a", None, True)])
    body = compressed_query(b"ALTER TABLE orders DROP COLUMN note")
    fake.add(ev.MARIADB_GTID, struct.pack("<QIB", 9, 0, 1) + bytes(3))
    fake.add(165, body[:-3] + bytes(3))
    with pytest.raises(IndexingError, match="compressed event type 165"):
        index(fake)


def test_the_archiver_ends_a_transaction_after_a_compressed_ddl() -> None:
    """The last event of the stream is a compressed standalone DDL: once the stream is
    quiet, everything up to its end is cut (not held back until the next transaction)."""
    fake = compressed_workload()
    stream = [raw for _start, raw in fake.events if raw[4] != ev.ROTATE]
    segmenter = Segmenter(fake.name, 4, 1.0, 1 << 20)
    out = []
    for raw in stream:
        out += segmenter.feed(raw, 0.0)
    out += segmenter.tick(10.0)
    assert out[-1].extent.end == len(fake.data) - len(fake.events[-1][1])


def test_the_restore_walk_ends_compressed_standalone_statements(tmp_path: Path) -> None:
    """Each compressed DDL is its own transaction with its own start (a --skip or --before
    next to one never takes it along); the last one is a boundary (latest reaches it)."""
    fake = compressed_workload()
    path = tmp_path / fake.name
    path.write_bytes(bytes(fake.data))
    found = list(transactions([path], Position(fake.name, 4)))
    gtids = [start for start, raw in fake.events if raw[4] == ev.MARIADB_GTID]
    assert [t.start.pos for t in found] == gtids
    assert [t.end.gtid for t in found] == [f"0-1-{n}" for n in range(1, 6)]
    assert found[-1].end.position.pos == len(fake.data) - len(fake.events[-1][1])
    assert [t.end.rows for t in found] == [True, True, True, False, False]


def test_undo_names_a_compressed_statement_format_statement(tmp_path: Path) -> None:
    fake = FakeFile("mysql-bin.000001")
    fake.add(ev.MARIADB_GTID, struct.pack("<QIB", 1, 0, 0) + bytes(3))
    fake.add(ev.QUERY, query_body(b"BEGIN"))
    fake.add(165, compressed_query(b"UPDATE customers SET visits = visits + 1"))
    fake.add(ev.XID, struct.pack("<Q", 1))
    path = tmp_path / fake.name
    path.write_bytes(bytes(fake.data))
    with pytest.raises(UndoRefused, match=r"statement-format statement \(UPDATE customers SET"):
        _check_dml(path, fake.events[1][0], len(fake.data), ev.CHECKSUM_CRC32, "0-1-1")
