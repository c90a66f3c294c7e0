"""MariaDB's compressed binlog events (`log_bin_compress=ON`), expanded for reading.

The archive keeps them as they are; readers that look inside events (the change index, the
restore's transaction walk) turn one into the event it stands for. MariaDB (sql/log_event.h,
log_event.cc: query_event_uncompress, row_log_event_uncompress, binlog_buf_uncompress):

- QUERY_COMPRESSED (165) is a QUERY event whose statement text is compressed; the post-header,
  status variables and default database before it are as in QUERY.
- WRITE/UPDATE/DELETE_ROWS_COMPRESSED_V1 (166-168) and _V2 (169-171) are the row events
  23-25 and 30-32 whose row images are compressed; the table id, flags, (v2) extra data,
  column count and column bitmaps before them are as in the plain event.

A compressed part is one header byte (bit 7 set; bits 4-6 the algorithm, only 0 = zlib;
bits 0-2 how many bytes hold the original length), that length big-endian, then a zlib
stream (zlib's `compress`). The plain event is the same header with its type and size
changed, the same prefix, the expanded part, and a fresh CRC32 when the file has checksums.
"""

from __future__ import annotations

import struct
import zlib

from backupd.binlog import events as ev

QUERY_COMPRESSED = 165
ROWS = {166: 23, 167: 24, 168: 25, 169: 30, 170: 31, 171: 32}  # compressed -> plain type
CODES = frozenset({QUERY_COMPRESSED, *ROWS})
_UPDATES = frozenset({167, 170})  # two column bitmaps: before and after image
_V2 = frozenset({169, 170, 171})  # a 2-byte extra-data length (counting itself) after flags
_ROWS_POST_HEADER = 8  # table id (6), flags (2)
_ZLIB = 0


def expand(raw: bytes, checksum_alg: int) -> tuple[int, bytes]:
    """(plain type, plain event) for a compressed event; EventError when it is damaged."""
    code = raw[4]
    end = len(raw) - (ev.CHECKSUM_SIZE if checksum_alg == ev.CHECKSUM_CRC32 else 0)
    try:
        if code == QUERY_COMPRESSED:
            plain = ev.QUERY
            db_at, db_len = ev.query_db(raw)
            at = db_at + db_len + 1
        elif code in ROWS:
            plain = ROWS[code]
            at = ev.HEADER_SIZE + _ROWS_POST_HEADER
            if code in _V2:
                at += struct.unpack_from("<H", raw, at)[0]
            columns, at = ev.lenenc(raw, at)
            at += (columns + 7) // 8 * (2 if code in _UPDATES else 1)
        else:
            raise ev.EventError(f"event type {code} is not a compressed MariaDB event")
    except (IndexError, struct.error) as exc:
        raise ev.EventError(f"compressed event type {code} ends inside its header") from exc
    if at >= end:
        raise ev.EventError(f"compressed event type {code} holds no compressed part")
    body = inflate(raw[at:end], f"compressed event type {code}")
    event = bytearray(raw[:at])
    event += body
    size = len(event) + (ev.CHECKSUM_SIZE if checksum_alg == ev.CHECKSUM_CRC32 else 0)
    event[4] = plain
    event[9:13] = size.to_bytes(4, "little")
    if checksum_alg == ev.CHECKSUM_CRC32:
        return plain, ev.with_checksum(bytes(event))
    return plain, bytes(event)


def query_text(raw: bytes, checksum_alg: int) -> bytes:
    """The statement of a QUERY or QUERY_COMPRESSED event."""
    if raw[4] == QUERY_COMPRESSED:
        raw = expand(raw, checksum_alg)[1]
    return ev.query_text(raw, checksum_alg)


def inflate(part: bytes, what: str) -> bytes:
    """The original bytes of one compressed part (header byte, length, zlib stream)."""
    first = part[0]
    width = first & 0x07
    if not first & 0x80 or (first >> 4) & 0x07 != _ZLIB or not 1 <= width <= 4:
        raise ev.EventError(f"{what}: unknown compression header 0x{first:02x}")
    if len(part) <= 1 + width:
        raise ev.EventError(f"{what}: compressed part ends inside its header")
    length = int.from_bytes(part[1 : 1 + width], "big")
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(part[1 + width :], length + 1)  # never more than announced
    except zlib.error as exc:
        raise ev.EventError(f"{what}: compressed part does not inflate: {exc}") from exc
    if not stream.eof or len(out) != length:
        raise ev.EventError(
            f"{what}: compressed part is damaged (announces {length} bytes, "
            f"{'holds ' + str(len(out)) if stream.eof else 'its zlib stream is cut'})"
        )
    return out
