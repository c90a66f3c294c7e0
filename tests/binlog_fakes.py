"""Synthetic binlog files and the stream a server would send for them (unit tests, no server)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import zstandard

from backupd.binlog import events as ev
from backupd.binlog.client import StreamEnded

ROWS = 23  # WRITE_ROWS_EVENT_V1: the body is opaque to the archiver


def fde_body(checksum_alg: int = ev.CHECKSUM_CRC32, version: bytes = b"10.11.99-MariaDB") -> bytes:
    return (
        struct.pack("<H", 4)
        + version.ljust(50, b"\0")
        + struct.pack("<I", 0)
        + bytes([ev.HEADER_SIZE])
        + bytes(40)
        + bytes([checksum_alg])
    )


def query_body(statement: bytes) -> bytes:
    return struct.pack("<IIBHH", 7, 0, 1, 0, 0) + b"t\0" + statement


def rotate_body(file: str, position: int) -> bytes:
    return struct.pack("<Q", position) + file.encode()


# MySQL 5.7 / 8.0 / 8.4 events, built byte by byte from the documented layouts of
# mysql-server's libbinlogevents (include/control_events.h: Gtid_event, Previous_gtids_event;
# src/codecs/binary.cpp: the Transaction_payload header; include/compression/base.h: the
# compression types ZSTD = 0, NONE = 255). Facts only: no MySQL server runs in these tests.
MYSQL_SID = bytes.fromhex("3e11fa47171a11e6a7b30242ac110002")
MYSQL_ROWS = 30  # WRITE_ROWS_EVENT (v2)
MYSQL_TABLE_MAP = 19


def lenenc(value: int) -> bytes:
    """A length-encoded integer of the client protocol (net_store_length)."""
    if value < 251:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def mysql_gtid_body(gno: int, anonymous: bool = False, five_seven: bool = False) -> bytes:
    """Gtid_event / Anonymous_gtid_event (8.0): commit flag (1 byte), SID (16), GNO (8, LE),
    logical-clock type code (1, = 2), last_committed (8), sequence_number (8), immediate
    commit timestamp (7; top bit clear: the original equals it), transaction length
    (length-encoded), immediate server version (4). Anonymous: SID and GNO are zero."""
    sid, number = (bytes(16), 0) if anonymous else (MYSQL_SID, gno)
    clock = struct.pack("<B16sqBqq", 1, sid, number, 2, max(gno - 1, 0), gno)
    if five_seven:  # MySQL 5.7 ends the event after the logical clock
        return clock
    return (
        clock
        + (1_700_000_000_000_000 + gno).to_bytes(7, "little")
        + lenenc(0)
        + struct.pack("<I", 80036)
    )


def previous_gtids_body() -> bytes:
    """Previous_gtids_event: the number of SIDs (8 bytes), then per SID the UUID (16) and
    its intervals (count, 8 bytes; each start and end, 8 bytes)."""
    return struct.pack("<Q", 1) + MYSQL_SID + struct.pack("<Qqq", 1, 1, 1)


def payload_body(inner: bytes, compress: bool = True) -> bytes:
    """Transaction_payload_event: (type, length, value) fields as length-encoded integers:
    compression type (2), uncompressed size (3, only when compressed), payload size (1),
    then the end mark (0) and the payload: the transaction's events without CRC32."""
    data = zstandard.ZstdCompressor().compress(inner) if compress else inner
    fields = [(ev.PAYLOAD_COMPRESSION, ev.PAYLOAD_ZSTD if compress else ev.PAYLOAD_NONE)]
    if compress:
        fields.append((ev.PAYLOAD_UNCOMPRESSED_SIZE, len(inner)))
    fields.append((ev.PAYLOAD_SIZE, len(data)))
    header = b"".join(lenenc(t) + lenenc(len(lenenc(v))) + lenenc(v) for t, v in fields)
    return header + lenenc(ev.PAYLOAD_END_MARK) + data


@dataclass
class Txn:
    """One transaction: `rows` row events of the given body sizes, or a DDL when ddl=True."""

    rows: list[int]
    ddl: bool = False


class FakeFile:
    """A binlog file built event by event, remembering each event and its offset."""

    def __init__(
        self, name: str, timestamp: int = 1_700_000_000, checksum: bool = True, mysql: bool = False
    ) -> None:
        """`checksum=False`: a `binlog_checksum=NONE` server. Its format description still
        ends with the algorithm byte (0) and a CRC32, as every checksum-aware server's does
        (MariaDB's Format_description_log_event::write); no other event carries one."""
        self.name = name
        self.checksum = checksum
        self.events: list[tuple[int, bytes]] = []  # (start offset, raw)
        self.data = bytearray(ev.MAGIC)
        self.timestamp = timestamp
        self.seq = 0
        alg = ev.CHECKSUM_CRC32 if checksum else ev.CHECKSUM_OFF
        version = b"8.0.36" if mysql else b"10.11.99-MariaDB"
        self.add(ev.FORMAT_DESCRIPTION, fde_body(alg, version), crc=True)
        if mysql:
            self.add(ev.MYSQL_PREVIOUS_GTIDS, previous_gtids_body())
        self.boundaries = {len(self.data)}

    def add(self, type_code: int, body: bytes, flags: int = 0, crc: bool | None = None) -> None:
        crc = self.checksum if crc is None else crc
        start = len(self.data)
        size = ev.HEADER_SIZE + len(body) + (ev.CHECKSUM_SIZE if crc else 0)
        raw = ev.build_event(type_code, body, start + size, self.timestamp, flags, checksum=crc)
        self.events.append((start, raw))
        self.data += raw

    def transaction(self, txn: Txn) -> None:
        self.seq += 1
        self.timestamp += 1
        standalone = ev.MARIADB_GTID_STANDALONE if txn.ddl else 0
        self.add(ev.MARIADB_GTID, struct.pack("<QIB", self.seq, 0, standalone) + bytes(3))
        if txn.ddl:
            self.add(ev.QUERY, query_body(b"CREATE TABLE x (id int)"))
        else:
            for size in txn.rows:
                self.add(ROWS, bytes(size % 251 for _ in range(size)))
            self.add(ev.XID, struct.pack("<Q", self.seq))
        self.boundaries.add(len(self.data))

    def mysql_transaction(
        self, rows: list[int], compressed: bool = False, anonymous: bool = False
    ) -> None:
        """GTID (or ANONYMOUS_GTID), then BEGIN, a table map, rows and XID; compressed:
        those four inside one TRANSACTION_PAYLOAD, as MySQL >= 8.0.20 writes them with
        binlog_transaction_compression=ON."""
        self.seq += 1
        self.timestamp += 1
        gtid = ev.MYSQL_ANONYMOUS_GTID if anonymous else ev.MYSQL_GTID
        self.add(gtid, mysql_gtid_body(self.seq, anonymous))
        inner = [(ev.QUERY, query_body(b"BEGIN")), (MYSQL_TABLE_MAP, bytes(12))]
        inner += [(MYSQL_ROWS, bytes(size % 251 for _ in range(size))) for size in rows]
        inner.append((ev.XID, struct.pack("<Q", self.seq)))
        if compressed:
            data = b"".join(
                ev.build_event(code, body, 0, self.timestamp, checksum=False)
                for code, body in inner
            )
            self.add(ev.MYSQL_TRANSACTION_PAYLOAD, payload_body(data))
        else:
            for code, body in inner:
                self.add(code, body)
        self.boundaries.add(len(self.data))

    def mysql_ddl(self, statement: bytes = b"CREATE TABLE t (id INT PRIMARY KEY)") -> None:
        """A DDL: a GTID, then one QUERY that is not BEGIN, and no XID or COMMIT after it."""
        self.seq += 1
        self.timestamp += 1
        self.add(ev.MYSQL_GTID, mysql_gtid_body(self.seq, five_seven=True))
        self.add(ev.QUERY, query_body(statement))
        self.boundaries.add(len(self.data))

    def rotate(self, next_file: str) -> None:
        self.add(ev.ROTATE, rotate_body(next_file, 4))

    def stream(self, position: int = 4) -> list[bytes]:
        """What COM_BINLOG_DUMP sends from `position`: artificial ROTATE, FDE, events."""
        out = [
            ev.build_event(
                ev.ROTATE,
                rotate_body(self.name, position),
                0,
                0,
                ev.FLAG_ARTIFICIAL,
                checksum=self.checksum,
            )
        ]
        fde_start, fde = self.events[0]
        if position == len(ev.MAGIC):
            out.append(fde)
        else:  # replayed with log_pos 0, and so a fresh CRC
            replay = bytearray(fde[: -ev.CHECKSUM_SIZE])
            struct.pack_into("<I", replay, 13, 0)
            out.append(ev.with_checksum(bytes(replay)))
        out += [raw for start, raw in self.events if start >= max(position, fde_start + 1)]
        return out


def heartbeat(file: str, position: int) -> bytes:
    return ev.build_event(ev.HEARTBEAT, file.encode(), position)


def framed(events: list[bytes], seq: int = 1) -> bytes:
    """`events` as the server sends them: each in one packet (length, sequence, OK byte)."""
    out = bytearray()
    for raw in events:
        out += struct.pack("<I", len(raw) + 1)[:3] + bytes([seq, 0]) + raw
        seq = (seq + 1) & 0xFF
    return bytes(out)


class FakeBinlogSource:
    """A BinlogSource serving a FakeFile from the dump position, framed as the server sends
    it; once everything was read it ends the dump (StreamEnded), as a server restart would."""

    def __init__(self, fake: FakeFile) -> None:
        self.fake = fake
        self.checksum_alg = 1  # CRC32, as the bed's servers declare
        self.dumps: list[tuple[str, int]] = []
        self.closed = False
        self._wire = b""
        self._offset = 0
        self._seq = 1

    def binary_logs(self) -> list[tuple[str, int]]:
        return [(self.fake.name, len(self.fake.data))]

    def dump(self, server_id: int, file: str, position: int, heartbeat_seconds: float) -> None:
        self.dumps.append((file, position))
        self._wire = framed(self.fake.stream(position))

    def buffered(self) -> tuple[bytes, int, int]:
        return self._wire, self._offset, self._seq

    def consumed(self, offset: int, seq: int) -> None:
        self._offset, self._seq = offset, seq

    def next_event(self, timeout: float) -> bytes | None:
        if self._offset >= len(self._wire):
            raise StreamEnded("the fake source has nothing more")
        length = int.from_bytes(self._wire[self._offset : self._offset + 3], "little")
        payload = self._wire[self._offset + 4 : self._offset + 4 + length]
        self._offset += 4 + length
        self._seq = (self._seq + 1) & 0xFF
        return payload[1:]

    def close(self) -> None:
        self.closed = True
