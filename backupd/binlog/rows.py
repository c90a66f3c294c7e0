"""Count the rows of a row event without decoding them: the change index needs how many
rows a transaction wrote, updated or deleted per table, not their values.

A row image is a null bitmap and then the value of every present, non-NULL column; a
value's width follows from its column type and the type's metadata in the TABLE_MAP event
(fixed, or a 1-4 byte length prefix). A table map is compiled once into steps (runs of
NOT NULL fixed-width columns merged into one step), so counting costs one loop turn per
step and row. Layouts: MySQL's libbinlogevents (rows_event.h, table_map event) and
MariaDB's log_event.h; the same as `mariadb-binlog -v` walks them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from backupd.binlog.events import lenenc

TABLE_MAP = 19
WRITE_V1, UPDATE_V1, DELETE_V1 = 23, 24, 25
WRITE_V2, UPDATE_V2, DELETE_V2 = 30, 31, 32
INSERT, UPDATE, DELETE = 0, 1, 2  # index into a table's [insert, update, delete] counts
ROW_EVENTS = {
    WRITE_V1: (INSERT, False),
    UPDATE_V1: (UPDATE, False),
    DELETE_V1: (DELETE, False),
    WRITE_V2: (INSERT, True),
    UPDATE_V2: (UPDATE, True),
    DELETE_V2: (DELETE, True),
}

# Column types (include/mysql_com.h enum_field_types, MariaDB's additions).
_FIXED = {1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 6: 0, 7: 4, 8: 8, 9: 3, 10: 3, 11: 3, 12: 8, 13: 1, 14: 3}
_VARCHAR = {15, 253, 140}  # VARCHAR, VAR_STRING, MariaDB VARCHAR_COMPRESSED: 2 metadata bytes
_BLOB = {249, 250, 251, 252, 255, 245, 141}  # blobs, GEOMETRY, JSON, BLOB_COMPRESSED: 1 byte
_TEMPORAL2 = {17: 4, 18: 5, 19: 3}  # TIMESTAMP2, DATETIME2, TIME2: base bytes; 1 byte fsp
_FLOATS = {4, 5}  # FLOAT, DOUBLE: 1 metadata byte
_BIT, _NEWDECIMAL, _ENUM, _SET, _STRING = 16, 246, 247, 248, 254
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


class RowsError(ValueError):
    """A row event or table map this walker cannot measure."""


@dataclass(frozen=True, slots=True)
class TableMap:
    """A table as a TABLE_MAP event describes it: its name and how to step over a row."""

    name: str  # "db.table"
    columns: int
    widths: tuple[tuple[int, int], ...]  # per column: (fixed bytes, length-prefix bytes)
    nullable: int  # bitmask of nullable columns


@lru_cache(maxsize=4096)
def steps(table: TableMap, present: int) -> tuple[tuple[int, int, int], ...]:
    """(null bit, fixed bytes, prefix bytes) per step over the present columns of `table`;
    NOT NULL fixed-width neighbours merge into one step (null bit 0). Cached: a table map
    repeats in every transaction."""
    out: list[tuple[int, int, int]] = []
    bit = 0
    for column in range(table.columns):
        if not present >> column & 1:
            continue
        fixed, prefix = table.widths[column]
        null_bit = 1 << bit if table.nullable >> column & 1 else 0
        bit += 1
        if not null_bit and not prefix and out and out[-1][0] == 0 and out[-1][2] == 0:
            out[-1] = (0, out[-1][1] + fixed, 0)
        else:
            out.append((null_bit, fixed, prefix))
    return tuple(out)


def parse_table_map(body: bytes) -> tuple[int, TableMap]:
    """(table id, map) from a TABLE_MAP event's body (after the header, without CRC)."""
    try:
        table_id = int.from_bytes(body[0:6], "little")
        at = 8
        db = body[at + 1 : at + 1 + body[at]].decode("utf-8", "replace")
        at += 1 + body[at] + 1
        table = body[at + 1 : at + 1 + body[at]].decode("utf-8", "replace")
        at += 1 + body[at] + 1
        columns, at = lenenc(body, at)
        types = body[at : at + columns]
        at += columns
        meta_len, at = lenenc(body, at)
        meta = body[at : at + meta_len]
        at += meta_len
        nullable = int.from_bytes(body[at : at + (columns + 7) // 8], "little")
        widths, used = [], 0
        for kind in types:
            width, used = _width(kind, meta, used)
            widths.append(width)
    except IndexError as exc:
        raise RowsError("table map event ends too early") from exc
    return table_id, TableMap(f"{db}.{table}", columns, tuple(widths), nullable)


def _width(kind: int, meta: bytes, at: int) -> tuple[tuple[int, int], int]:
    """((fixed bytes, prefix bytes) of one column's values, next metadata offset)."""
    if kind in _FLOATS:
        return (_FIXED[kind], 0), at + 1
    if kind in _FIXED:
        return (_FIXED[kind], 0), at
    if kind in _VARCHAR:
        max_len = int.from_bytes(meta[at : at + 2], "little")
        return (0, 1 if max_len < 256 else 2), at + 2
    if kind in _BLOB:
        return (0, meta[at]), at + 1
    if kind in _TEMPORAL2:
        return (_TEMPORAL2[kind] + (meta[at] + 1) // 2, 0), at + 1
    if kind in _TWO_BYTE_META:
        return _TWO_BYTE_META[kind](meta[at], meta[at + 1]), at + 2
    raise RowsError(f"column type {kind} has no known row format")


def _bit(bits: int, whole_bytes: int) -> tuple[int, int]:
    return whole_bytes + (1 if bits else 0), 0


def _decimal(precision: int, scale: int) -> tuple[int, int]:
    whole = precision - scale
    return whole // 9 * 4 + _DIG2BYTES[whole % 9] + scale // 9 * 4 + _DIG2BYTES[scale % 9], 0


def _string(first: int, second: int) -> tuple[int, int]:
    """CHAR, ENUM and SET share the STRING type; the metadata says which (and a CHAR longer
    than 255 bytes keeps bits of its length in the first byte)."""
    if first & 0x30 != 0x30:
        real, max_len = first | 0x30, second | ((first & 0x30) ^ 0x30) << 4
    else:
        real, max_len = first, second
    if real in (_ENUM, _SET):
        return second, 0
    return 0, 1 if max_len < 256 else 2


_TWO_BYTE_META = {
    _BIT: _bit,
    _NEWDECIMAL: _decimal,
    _STRING: _string,
    _ENUM: _string,
    _SET: _string,
}


Image = tuple[tuple[tuple[int, int, int], ...], int, int]  # steps, null bytes, fixed width


@lru_cache(maxsize=4096)
def _images(table: TableMap, bitmaps: bytes, columns: int) -> tuple[Image, ...]:
    """(steps, null bitmap bytes, row width or 0) of each row image an event's present-column
    bitmaps say (one, or two for an update: before and after). The width is that of a row
    whose every present column is NOT NULL and fixed-width (0 otherwise): such rows are
    counted by division. Cached: they repeat event after event."""
    width = (columns + 7) // 8
    out = []
    for offset in range(0, len(bitmaps), width):
        present = int.from_bytes(bitmaps[offset : offset + width], "little")
        walk = steps(table, present)
        null_bytes = (bin(present).count("1") + 7) // 8
        if not null_bytes and not any(fixed or prefix for _, fixed, prefix in walk):
            raise RowsError(f"row image of {table.name} has no bytes")  # would never end
        fixed = all(not null_bit and not prefix for null_bit, _, prefix in walk)
        row_width = null_bytes + sum(step[1] for step in walk) if fixed else 0
        out.append((walk, null_bytes, row_width))
    return tuple(out)


def count_rows(
    data: bytes, code: int, tables: dict[int, TableMap], start: int = 0, end: int | None = None
) -> tuple[str, int, int]:
    """(table name, operation, rows) of a row event's body: `data[start:end]` (after the
    header, without the CRC; offsets, so the indexer needs no copy of the event)."""
    operation, v2 = ROW_EVENTS[code]
    end = len(data) if end is None else end
    table_id = int.from_bytes(data[start : start + 6], "little")
    table = tables.get(table_id)
    if table is None:
        raise RowsError(f"row event for table id {table_id} without its table map")
    at = start + 8
    if v2:
        at += struct.unpack_from("<H", data, at)[0]  # extra data length includes itself
    try:
        columns, at = lenenc(data, at)
        bitmaps = (columns + 7) // 8 * (2 if operation == UPDATE else 1)
        images = _images(table, data[at : at + bitmaps], columns)
        at += bitmaps
        if len(images) == 1 and images[0][2]:  # one fixed-width image: divide
            rows = (end - at) // images[0][2]
            at += rows * images[0][2]
        else:
            rows, at = _walk(data, images, at, end)
    except IndexError as exc:
        raise RowsError(f"row event of {table.name} ends inside a row") from exc
    if at != end:
        raise RowsError(f"row event of {table.name} does not end at a row boundary")
    return table.name, operation, rows


def _walk(data: bytes, images: tuple[Image, ...], at: int, end: int) -> tuple[int, int]:
    """(rows, end offset) of rows of one image (insert, delete) or two (update)."""
    rows = 0
    while at < end:
        for image in images:
            at = _skip_row(data, image, at)
        rows += 1
    return rows, at


def _skip_row(data: bytes, image: Image, at: int) -> int:
    """The offset after one row image at `at` (a one-byte length prefix is read directly:
    this is the indexer's innermost loop)."""
    walk, null_bytes, _width = image
    nulls = int.from_bytes(data[at : at + null_bytes], "little") if null_bytes else 0
    at += null_bytes
    for null_bit, fixed, prefix in walk:
        if nulls & null_bit:
            continue
        if prefix == 1:
            at += 1 + data[at]
        elif prefix:
            at += prefix + int.from_bytes(data[at : at + prefix], "little")
        else:
            at += fixed
    return at
