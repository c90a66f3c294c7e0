"""Synthetic binlog files and the stream a server would send for them (unit tests, no server)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from backupd.binlog import events as ev
from backupd.binlog.client import StreamEnded

ROWS = 23  # WRITE_ROWS_EVENT_V1: the body is opaque to the archiver


def fde_body() -> bytes:
    return (
        struct.pack("<H", 4)
        + b"10.11.99-MariaDB".ljust(50, b"\0")
        + struct.pack("<I", 0)
        + bytes([ev.HEADER_SIZE])
        + bytes(40)
        + bytes([ev.CHECKSUM_CRC32])
    )


def query_body(statement: bytes) -> bytes:
    return struct.pack("<IIBHH", 7, 0, 1, 0, 0) + b"t\0" + statement


def rotate_body(file: str, position: int) -> bytes:
    return struct.pack("<Q", position) + file.encode()


@dataclass
class Txn:
    """One transaction: `rows` row events of the given body sizes, or a DDL when ddl=True."""

    rows: list[int]
    ddl: bool = False


class FakeFile:
    """A binlog file built event by event, remembering each event and its offset."""

    def __init__(self, name: str, timestamp: int = 1_700_000_000) -> None:
        self.name = name
        self.events: list[tuple[int, bytes]] = []  # (start offset, raw)
        self.data = bytearray(ev.MAGIC)
        self.timestamp = timestamp
        self.seq = 0
        self.add(ev.FORMAT_DESCRIPTION, fde_body())
        self.boundaries = {len(self.data)}

    def add(self, type_code: int, body: bytes, flags: int = 0) -> None:
        start = len(self.data)
        size = ev.HEADER_SIZE + len(body) + ev.CHECKSUM_SIZE
        raw = ev.build_event(type_code, body, start + size, self.timestamp, flags)
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

    def rotate(self, next_file: str) -> None:
        self.add(ev.ROTATE, rotate_body(next_file, 4))

    def stream(self, position: int = 4) -> list[bytes]:
        """What COM_BINLOG_DUMP sends from `position`: artificial ROTATE, FDE, events."""
        out = [
            ev.build_event(ev.ROTATE, rotate_body(self.name, position), 0, 0, ev.FLAG_ARTIFICIAL)
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
