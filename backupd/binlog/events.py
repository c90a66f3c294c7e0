"""The binlog v4 event header and the integrity checks every archived event passes.

An event is `header (19 bytes) + body [+ CRC32 (4 bytes)]`. The header's `log_pos` is the
position just past the event in its binlog file, so `log_pos - event_size` is where the event
starts: that is how the archiver places every byte at its exact offset in the file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")
HEADER_SIZE = HEADER.size  # 19
CHECKSUM_SIZE = 4

# Event types that matter for placing and cutting the stream.
QUERY = 2
STOP = 3
ROTATE = 4
FORMAT_DESCRIPTION = 15
XID = 16
HEARTBEAT = 27
MYSQL_GTID = 33
MYSQL_ANONYMOUS_GTID = 34
MYSQL_PREVIOUS_GTIDS = 35
MYSQL_TRANSACTION_PAYLOAD = 40  # MySQL >= 8.0.20: a whole transaction's events, compressed
MYSQL_HEARTBEAT_V2 = 41  # MySQL >= 8.0.26: a heartbeat with a 64-bit position; never in a file
HEARTBEATS = frozenset({HEARTBEAT, MYSQL_HEARTBEAT_V2})  # keep-alives: never in a file
MARIADB_ANNOTATE_ROWS = 160
MARIADB_BINLOG_CHECKPOINT = 161
MARIADB_GTID = 162
MARIADB_GTID_LIST = 163

FLAG_IN_USE = 0x1  # LOG_EVENT_BINLOG_IN_USE_F: set in the FDE of the file being written
FLAG_ARTIFICIAL = 0x20  # LOG_EVENT_ARTIFICIAL_F: made up by the server, not in any file

# TRANSACTION_PAYLOAD header fields and compression types (libbinlogevents, codecs/binary.cpp
# and compression/base.h): type, length and value are each a length-encoded integer.
PAYLOAD_END_MARK = 0
PAYLOAD_SIZE = 1
PAYLOAD_COMPRESSION = 2
PAYLOAD_UNCOMPRESSED_SIZE = 3
PAYLOAD_ZSTD = 0
PAYLOAD_NONE = 255

MARIADB_GTID_STANDALONE = 0x1  # FL_STANDALONE: a DDL-like statement with no COMMIT after it

CHECKSUM_OFF = 0
CHECKSUM_CRC32 = 1


class EventError(ValueError):
    """An event that cannot be archived as it is (bad checksum, size or position)."""


@dataclass(frozen=True, slots=True)
class Header:
    timestamp: int
    type_code: int
    server_id: int
    event_size: int
    log_pos: int
    flags: int

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview) -> Header:
        if len(raw) < HEADER_SIZE:
            raise EventError(f"event of {len(raw)} bytes is shorter than its 19-byte header")
        return cls(*HEADER.unpack_from(raw, 0))

    @property
    def start(self) -> int:
        """Offset of the event in its file (valid for real events with log_pos != 0)."""
        return self.log_pos - self.event_size

    @property
    def artificial(self) -> bool:
        return bool(self.flags & FLAG_ARTIFICIAL)


def fde_checksum_alg(raw: bytes | bytearray | memoryview) -> int:
    """The checksum algorithm a format description event announces for its file.

    Since MySQL 5.6.1 / MariaDB 5.3 the FDE ends with `alg (1 byte) + CRC32 (4 bytes)`.
    """
    if len(raw) < HEADER_SIZE + 57 + CHECKSUM_SIZE + 1:
        return CHECKSUM_OFF
    alg = raw[len(raw) - CHECKSUM_SIZE - 1]
    return CHECKSUM_CRC32 if alg == CHECKSUM_CRC32 else CHECKSUM_OFF


def fde_crc_present(raw: bytes | bytearray | memoryview) -> bool:
    """Whether a format description carries a CRC32 of itself.

    A checksum-aware server's FDE always ends with `alg + CRC32`, even when its file's other
    events carry none (`binlog_checksum=NONE`: alg 0, and still a CRC; MariaDB's
    Format_description_log_event::write). Four zero bytes there mean no CRC was written."""
    if len(raw) < HEADER_SIZE + 57 + CHECKSUM_SIZE + 1:
        return False
    return fde_checksum_alg(raw) == CHECKSUM_CRC32 or any(raw[len(raw) - CHECKSUM_SIZE :])


def check(raw: bytes, checksum_alg: int) -> tuple[int, int, int, int, int, int]:
    """The hot path of `verify`: the header fields as a tuple, after the same checks."""
    fields: tuple[int, int, int, int, int, int] = HEADER.unpack_from(raw, 0)
    size = fields[3]
    if size != len(raw) or fields[1] == FORMAT_DESCRIPTION or size < HEADER_SIZE + CHECKSUM_SIZE:
        verify(raw, checksum_alg)  # the slow path names the problem (or passes the FDE)
        return fields
    if checksum_alg == CHECKSUM_CRC32 and zlib.crc32(
        memoryview(raw)[: size - CHECKSUM_SIZE]
    ) != int.from_bytes(raw[size - CHECKSUM_SIZE :], "little"):
        raise EventError(f"CRC32 mismatch in event type {fields[1]} ending at {fields[4]}")
    return fields


def verify(raw: bytes | bytearray | memoryview, checksum_alg: int) -> Header:
    """Parse and check an event's size field and (when on) its CRC32; raise EventError."""
    header = Header.parse(raw)
    if header.event_size != len(raw):
        raise EventError(
            f"event type {header.type_code} says {header.event_size} bytes, got {len(raw)}"
        )
    if header.type_code == FORMAT_DESCRIPTION:
        alg = CHECKSUM_CRC32 if fde_crc_present(raw) else CHECKSUM_OFF
    else:
        alg = checksum_alg
    if alg == CHECKSUM_CRC32:
        if header.event_size < HEADER_SIZE + CHECKSUM_SIZE:
            raise EventError(f"event type {header.type_code} too short for a checksum")
        body = memoryview(raw)[: header.event_size - CHECKSUM_SIZE]
        (stored,) = struct.unpack_from("<I", raw, header.event_size - CHECKSUM_SIZE)
        if zlib.crc32(body) != stored:
            raise EventError(
                f"CRC32 mismatch in event type {header.type_code} ending at {header.log_pos}"
            )
    return header


def rotate_target(raw: bytes | bytearray | memoryview, checksum_alg: int) -> tuple[str, int]:
    """The (file, position) a ROTATE event points to."""
    end = len(raw) - (CHECKSUM_SIZE if checksum_alg == CHECKSUM_CRC32 else 0)
    (position,) = struct.unpack_from("<Q", raw, HEADER_SIZE)
    name = bytes(raw[HEADER_SIZE + 8 : end]).decode("utf-8", "replace")
    return name, position


def with_checksum(raw: bytes) -> bytes:
    """`raw` (an event without its last 4 bytes) followed by its CRC32: for building tests."""
    return raw + struct.pack("<I", zlib.crc32(raw))


def build_event(
    type_code: int,
    body: bytes,
    log_pos: int,
    timestamp: int = 0,
    flags: int = 0,
    server_id: int = 1,
    checksum: bool = True,
) -> bytes:
    """Encode an event (header + body [+ CRC32]): how tests build synthetic binlogs."""
    size = HEADER_SIZE + len(body) + (CHECKSUM_SIZE if checksum else 0)
    raw = HEADER.pack(timestamp, type_code, server_id, size, log_pos, flags) + body
    return with_checksum(raw) if checksum else raw


def mariadb_gtid(raw: bytes | bytearray | memoryview, server_id: int) -> tuple[str, int]:
    """The GTID text `domain-server-seq` of a MariaDB GTID event, and its flags2 byte."""
    seq, domain = struct.unpack_from("<QI", raw, HEADER_SIZE)
    flags2 = raw[HEADER_SIZE + 12]
    return f"{domain}-{server_id}-{seq}", flags2


def query_db(raw: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(offset, length) of a QUERY event's default database; its statement begins one byte
    (a NUL) after it. The same in MariaDB's QUERY_COMPRESSED, whose statement is packed."""
    # post-header: thread_id u32, exec_time u32, db_len u8, error_code u16, status_len u16
    db_len = raw[HEADER_SIZE + 8]
    (status_len,) = struct.unpack_from("<H", raw, HEADER_SIZE + 11)
    return HEADER_SIZE + 13 + status_len, db_len


def query_text(raw: bytes | bytearray | memoryview, checksum_alg: int) -> bytes:
    """The statement of a QUERY event (for spotting COMMIT), without decoding the rest."""
    db_at, db_len = query_db(raw)
    end = len(raw) - (CHECKSUM_SIZE if checksum_alg == CHECKSUM_CRC32 else 0)
    return bytes(raw[db_at + db_len + 1 : end])


def lenenc(raw: bytes | bytearray | memoryview, at: int) -> tuple[int, int]:
    """A length-encoded integer of the client protocol at `at`: (value, next offset) (in
    transaction payloads and row events)."""
    first = raw[at]
    if first < 0xFB:
        return first, at + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None:
        raise EventError(f"bad length-encoded integer 0x{first:02x}")
    return int.from_bytes(raw[at + 1 : at + 1 + width], "little"), at + 1 + width


def payload_events(raw: bytes | bytearray | memoryview, checksum_alg: int) -> Iterator[bytes]:
    """The events inside a MySQL TRANSACTION_PAYLOAD event (its CRC, if any, already checked).

    The body is a header of (type, length, value) fields ending with a 0 type, then the
    payload: the transaction's events, zstd-compressed (or stored) without their own CRC32."""
    end = len(raw) - (CHECKSUM_SIZE if checksum_alg == CHECKSUM_CRC32 else 0)
    at, size, compression, expanded = HEADER_SIZE, None, PAYLOAD_ZSTD, None
    try:
        while True:
            field, at = lenenc(raw, at)
            if field == PAYLOAD_END_MARK:
                break
            length, at = lenenc(raw, at)
            if field in (PAYLOAD_SIZE, PAYLOAD_COMPRESSION, PAYLOAD_UNCOMPRESSED_SIZE):
                value, at = lenenc(raw, at)
                size = value if field == PAYLOAD_SIZE else size
                compression = value if field == PAYLOAD_COMPRESSION else compression
                expanded = value if field == PAYLOAD_UNCOMPRESSED_SIZE else expanded
            else:
                at += length  # a field added later: skip it
    except IndexError as exc:
        raise EventError("transaction payload header runs past its event") from exc
    body = bytes(raw[at:end])
    if size is not None and size != len(body):
        raise EventError(f"transaction payload says {size} bytes, holds {len(body)}")
    if compression == PAYLOAD_ZSTD:
        body = _unzstd(body, expanded)
    elif compression != PAYLOAD_NONE:
        raise EventError(f"transaction payload compressed with unknown type {compression}")
    offset = 0
    while offset < len(body):
        inner = Header.parse(body[offset:])
        if inner.event_size < HEADER_SIZE or offset + inner.event_size > len(body):
            raise EventError("an event inside a transaction payload runs past its end")
        yield body[offset : offset + inner.event_size]
        offset += inner.event_size


def _unzstd(body: bytes, expanded: int | None) -> bytes:
    """One whole zstd frame, of the size the payload header announces (when it does)."""
    stream = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = stream.decompress(body)
    except zstandard.ZstdError as exc:
        raise EventError(f"transaction payload does not decompress: {exc}") from exc
    if not stream.eof or (expanded is not None and len(out) != expanded):
        raise EventError("transaction payload is truncated or does not match its size")
    return out


def mysql_gtid(raw: bytes | bytearray | memoryview) -> str:
    """The `uuid:gno` of a MySQL GTID event (after a 1-byte flag: SID 16 bytes, GNO 8 LE)."""
    sid = bytes(raw[HEADER_SIZE + 1 : HEADER_SIZE + 17]).hex()
    (gno,) = struct.unpack_from("<q", raw, HEADER_SIZE + 17)
    return f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}"
