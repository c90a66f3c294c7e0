"""The change index: per archived segment, one entry per transaction that commits in it.

An entry says where the transaction is (GTID, file, start and end position), when it
committed, which tables it changed with how many rows inserted, updated and deleted (from
the TABLE_MAP and row events), and for statements (DDL, statement-based changes) their
kind and masked, truncated text (`statements`); for row changes MariaDB's annotate event
gives the statement that made them. `backupctl find` answers from these objects alone.

`Indexer` walks a file's segments in order, so a transaction cut by a `mid` segment is
indexed in the segment where it commits; its state (checksum setting, table maps, the
transaction still open) carries from one segment of a file to the next. A segment that does
not continue the state (a restart in the middle of a file) starts fresh and learns the
checksum setting from its first event's CRC.

The object: zstd-compressed JSON (`index_format`) of one or several consecutive segments,
stored under the key `layout.IndexKey` names from the range and the object's own sha256.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from backupd.binlog import compressed, rows, statements
from backupd.binlog import events as ev
from backupd.binlog.extent import Extent

_HEADER = struct.Struct("<IBIII")  # timestamp, type, server id, size, log_pos
_ROW_CODES = frozenset(rows.ROW_EVENTS)
_MYSQL_GTIDS = frozenset({ev.MYSQL_GTID, ev.MYSQL_ANONYMOUS_GTID})
_MARIADB_COMPRESSED = compressed.CODES  # log_bin_compress: QUERY and row events


class IndexingError(ValueError):
    """A segment the indexer cannot read (its index is then left to the backfill)."""


@dataclass(slots=True)
class Transaction:
    """One transaction as the index records it."""

    gtid: str | None
    file: str
    pos: int
    end_pos: int = 0
    commit_time: int = 0
    tables: dict[str, list[int]] = field(default_factory=dict)  # name -> [ins, upd, del]
    kind: str = statements.KIND_OTHER
    statement: str | None = None

    @property
    def rows(self) -> int:
        return sum(sum(counts) for counts in self.tables.values())

    def to_list(self) -> list[Any]:
        return [
            self.gtid,
            self.pos,
            self.end_pos,
            self.commit_time,
            self.kind,
            self.tables,
            self.statement,
        ]

    @classmethod
    def from_list(cls, file: str, item: list[Any]) -> Transaction:
        gtid, pos, end_pos, commit_time, kind, tables, statement = item
        return cls(gtid, file, pos, end_pos, commit_time, tables, kind, statement)


@dataclass(slots=True)
class _Open:
    """The transaction being read."""

    txn: Transaction
    standalone: bool = False  # a MariaDB standalone GTID or a MySQL GTID before BEGIN
    began: bool = False  # BEGIN seen
    annotate: str | None = None


class Indexer:
    """Index segments of a stream in file order; one instance per archive writer."""

    def __init__(self) -> None:
        self._file = ""
        self._position = -1
        self._alg: int | None = None
        self._tables: dict[int, rows.TableMap] = {}
        self._maps: dict[bytes, tuple[int, rows.TableMap]] = {}  # body -> parsed (a cache)
        self._open: _Open | None = None

    def index(self, extent: Extent, data: bytes) -> list[Transaction]:
        """The transactions that commit in this segment's bytes."""
        if extent.file != self._file or extent.start != self._position or extent.start == 0:
            self._reset(extent.file)
        done: list[Transaction] = []
        at = 0
        if extent.start == 0:
            if data[:4] != ev.MAGIC:
                raise IndexingError(f"{extent.file} does not begin with the binlog magic")
            at = 4
        try:
            self._walk(data, at, extent.start, done)
        except (IndexError, struct.error, rows.RowsError, ev.EventError) as exc:
            self._reset(extent.file)
            raise IndexingError(f"{extent.file} {extent.start}..{extent.end}: {exc}") from exc
        self._position = extent.end
        return done

    def _walk(self, data: bytes, at: int, base: int, done: list[Transaction]) -> None:
        """Every event of `data` from `at` (`base`: the file offset of data[0]). The events
        of every transaction (XID, row events, table maps) are handled here without a copy
        of their bytes or a call per event: this loop is the index's cost to archiving."""
        unpack, size_of_data, header = _HEADER.unpack_from, len(data), ev.HEADER_SIZE
        row_codes, table_map, xid = _ROW_CODES, rows.TABLE_MAP, ev.XID
        crc = self._crc()
        while at < size_of_data:
            timestamp, code, server_id, size, _log_pos = unpack(data, at)
            end = at + size
            if size < header or end > size_of_data:
                raise IndexingError(f"{self._file}: event at {base + at} is cut")
            if self._alg is None:
                self._alg = _detect_alg(data[at:end], code)
                crc = self._crc()
            if code == xid:
                self._commit(base + end, timestamp, done)
            elif code in row_codes:
                self._rows(data, at + header, end - crc, code, base + at)
            elif code == table_map:
                self._table_map(data[at + header : end - crc])
            else:
                self._event(data[at:end], code, timestamp, server_id, base + at, done)
                crc = self._crc()  # a format description may set the checksum
            at = end

    def _crc(self) -> int:
        return ev.CHECKSUM_SIZE if self._alg == ev.CHECKSUM_CRC32 else 0

    def _reset(self, file: str) -> None:
        self._file, self._alg, self._open = file, None, None
        self._tables = {}

    def _table_map(self, body: bytes) -> None:
        parsed = self._maps.get(body)
        if parsed is None:
            parsed = rows.parse_table_map(body)
            if len(self._maps) > 10_000:
                self._maps.clear()
            self._maps[body] = parsed
        self._tables[parsed[0]] = parsed[1]

    def _event(
        self, raw: bytes, code: int, timestamp: int, server_id: int, start: int, done: list[Any]
    ) -> None:
        """Any other event (or, inside a MySQL transaction payload, every event); the
        most common first."""
        end = start + len(raw)
        if code == ev.MARIADB_GTID:
            gtid, flags2 = ev.mariadb_gtid(raw, server_id)
            self._begin(gtid, start, bool(flags2 & ev.MARIADB_GTID_STANDALONE))
        elif code == ev.MARIADB_ANNOTATE_ROWS:
            if self._open is not None and self._open.annotate is None:
                text = raw[ev.HEADER_SIZE : len(raw) - self._crc()].decode("utf-8", "replace")
                self._open.annotate = statements.summary(text)
        elif code in _ROW_CODES:
            self._rows(raw, ev.HEADER_SIZE, len(raw) - self._crc(), code, start)
        elif code == rows.TABLE_MAP:
            self._table_map(raw[ev.HEADER_SIZE : len(raw) - self._crc()])
        elif code == ev.XID:
            self._commit(end, timestamp, done)
        elif code == ev.QUERY:
            self._query(raw, start, end, timestamp, done)
        elif code in _MYSQL_GTIDS:
            self._begin(_mysql_gtid(raw) if code == ev.MYSQL_GTID else None, start, True)
        elif code == ev.MYSQL_TRANSACTION_PAYLOAD:
            self._payload(raw, start, end, timestamp, done)
        else:
            self._file_event(raw, code, timestamp, start, done)

    def _file_event(
        self, raw: bytes, code: int, timestamp: int, start: int, done: list[Any]
    ) -> None:
        """Events about the file rather than a transaction, and the rarer compressed ones."""
        if code == ev.FORMAT_DESCRIPTION:
            self._alg = ev.fde_checksum_alg(raw)
            self._tables = {}
        elif code in _MARIADB_COMPRESSED:
            self._compressed(raw, timestamp, start, done)

    def _begin(self, gtid: str | None, start: int, standalone: bool) -> None:
        self._open = _Open(Transaction(gtid, self._file, start), standalone)

    def _current(self, start: int) -> _Open:
        """The open transaction; one begins here when the stream shows none (no GTIDs)."""
        if self._open is None:
            self._open = _Open(Transaction(None, self._file, start))
        return self._open

    def _rows(self, data: bytes, begin: int, end: int, code: int, start: int) -> None:
        name, operation, count = rows.count_rows(data, code, self._tables, begin, end)
        txn = self._current(start).txn
        counts = txn.tables.get(name)
        if counts is None:
            counts = txn.tables[name] = [0, 0, 0]
        counts[operation] += count
        txn.kind = statements.KIND_DML

    def _query(self, raw: bytes, start: int, end: int, timestamp: int, done: list[Any]) -> None:
        text = ev.query_text(raw, self._alg or ev.CHECKSUM_OFF)
        if text == b"BEGIN":
            self._current(start).began = True
            return
        if text in (b"COMMIT", b"ROLLBACK"):
            self._commit(end, timestamp, done)
            return
        opened = self._current(start)
        statement = text.decode("utf-8", "replace")
        txn = opened.txn
        if txn.statement is None:
            txn.statement = statements.summary(statement)
        if txn.kind != statements.KIND_DML:
            txn.kind = statements.kind(statement)
        if txn.kind == statements.KIND_DDL:
            at, db_len = ev.query_db(raw)
            default_db = raw[at : at + db_len].decode("utf-8", "replace")
            table = statements.ddl_table(statement, default_db)
            if table:
                txn.tables.setdefault(table, [0, 0, 0])
        if opened.standalone or not opened.began:
            self._commit(end, timestamp, done)

    def _payload(self, raw: bytes, start: int, end: int, timestamp: int, done: list[Any]) -> None:
        """A MySQL TRANSACTION_PAYLOAD: its inner events (no CRC) form the transaction."""
        alg, self._alg = self._alg, ev.CHECKSUM_OFF
        try:
            for inner in ev.payload_events(raw, alg or ev.CHECKSUM_OFF):
                inner_ts, code, server_id, _size, _pos = _HEADER.unpack_from(inner, 0)
                self._event(bytes(inner), code, inner_ts, server_id, start, [])
        finally:
            self._alg = alg
        self._commit(end, timestamp, done)

    def _compressed(self, raw: bytes, timestamp: int, start: int, done: list[Any]) -> None:
        """A log_bin_compress event, indexed as the plain event it expands to (which ends
        where the compressed one does)."""
        code, plain = compressed.expand(raw, self._alg or ev.CHECKSUM_OFF)
        if code == ev.QUERY:
            self._query(plain, start, start + len(raw), timestamp, done)
        else:
            self._rows(plain, ev.HEADER_SIZE, len(plain) - self._crc(), code, start)

    def _commit(self, end: int, timestamp: int, done: list[Transaction]) -> None:
        opened = self._open
        self._open = None
        if opened is None:
            return
        txn = opened.txn
        txn.end_pos, txn.commit_time = end, timestamp
        if txn.kind == statements.KIND_DML and opened.annotate is not None:
            txn.statement = opened.annotate
        done.append(txn)


def _detect_alg(raw: bytes, code: int) -> int:
    """The checksum setting of a file seen from the middle: does the event end in its CRC?"""
    if code == ev.FORMAT_DESCRIPTION:
        return ev.fde_checksum_alg(raw)
    stored = int.from_bytes(raw[-ev.CHECKSUM_SIZE :], "little")
    return ev.CHECKSUM_CRC32 if zlib.crc32(raw[: -ev.CHECKSUM_SIZE]) == stored else ev.CHECKSUM_OFF


def _mysql_gtid(raw: bytes) -> str:
    """ "uuid:gno" of a MySQL GTID event."""
    sid = raw[ev.HEADER_SIZE + 1 : ev.HEADER_SIZE + 17].hex()
    (gno,) = struct.unpack_from("<q", raw, ev.HEADER_SIZE + 17)
    uuid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}"
    return f"{uuid}:{gno}"


# -- the stored object ---------------------------------------------------------------------


@dataclass(frozen=True)
class IndexObject:
    """The index of bytes [start, end) of a file: the transactions that commit in them."""

    file: str
    start: int
    end: int
    transactions: list[Transaction]
