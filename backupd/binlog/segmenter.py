"""Cut the replication stream into segments: exact byte ranges of one binlog file.

Pure (no I/O, time passed in), so it is table- and property-tested. Every event the server
sends is verified (size, CRC32) and placed by its own `log_pos`: an event is accepted only
when it starts exactly where the previous one ended, so a segment's bytes are the file's
bytes. Events the server makes up for the stream (the artificial ROTATE, heartbeats, the
format description replayed on a mid-file start with `log_pos` 0) are never written.

A segment ends at a transaction boundary (after XID or a COMMIT query, after a standalone
GTID's statement, after a MySQL TRANSACTION_PAYLOAD, before a GTID) once `flush_seconds`
passed or `segment_max_bytes` is reached. A single transaction larger than
`segment_max_bytes` is cut at an event boundary (kind `mid`) so memory and spool stay
bounded. A real ROTATE or STOP ends the file (`eof`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from backupd.binlog import compressed
from backupd.binlog import events as ev
from backupd.binlog.extent import Extent, HasExtent

IDLE_FRACTION = 0.25  # a stream silent this part of flush_seconds is cut at once
IDLE_LARGE_BYTES = 1 << 20  # after this many bytes without a cut by time, cut sooner:
IDLE_LARGE_SECONDS = 0.02  # ... after this much silence
KIND_TX = "tx"  # ends at a transaction boundary
KIND_MID = "mid"  # ends inside a transaction (that transaction exceeds segment_max_bytes)
KIND_EOF = "eof"  # ends the file (ROTATE or STOP, or the server moved on to the next file)

_GTIDS = frozenset({ev.MARIADB_GTID, ev.MYSQL_GTID, ev.MYSQL_ANONYMOUS_GTID})
# events that may end a transaction; a MySQL TRANSACTION_PAYLOAD holds a whole one
_MARKERS = _GTIDS | {ev.XID, ev.QUERY, ev.ROTATE, ev.STOP, ev.MYSQL_TRANSACTION_PAYLOAD}
# log_bin_compress: a compressed QUERY ends a standalone transaction like a QUERY; it is never
# BEGIN, COMMIT or ROLLBACK (MariaDB compresses statements of log_bin_compress_min_len >= 10)
_MARKERS |= {compressed.QUERY_COMPRESSED}
_HEARTBEATS = ev.HEARTBEATS
_SLOW_PATH = _MARKERS | _HEARTBEATS | {ev.FORMAT_DESCRIPTION}
_MIN_CHECKED = ev.HEADER_SIZE + ev.CHECKSUM_SIZE
_PACKET_EVENT = struct.Struct("<IB" + ev.HEADER.format[1:])  # packet header, OK byte, event header
_FRAME = 5  # packet header and OK byte before each event
_MAX_SINGLE_PACKET_EVENT = 0xFFFFFF - 1  # larger events span several packets
_CRC32_RESIDUE = 0x2144DF1C  # zlib.crc32(m + crc32(m) as 4 little-endian bytes), any m


class ChainError(ev.EventError):
    """An event that does not continue the file where the archive stands."""


@dataclass(frozen=True)
class Segment(HasExtent):
    """Bytes [start, end) of `file`, with what a restore planner needs to know about them."""

    extent: Extent
    data: bytes = field(repr=False)


@dataclass
class _Pending:
    start: int
    data: bytearray = field(default_factory=bytearray)
    since: float = 0.0  # when its first byte arrived
    boundary: int = 0  # absolute position of the last transaction boundary inside
    first_time: int = 0
    last_time: int = 0
    boundary_time: int = 0  # last_time of the events up to `boundary`
    tail_time: int | None = None  # timestamp of the first event after `boundary`
    gtids: list[tuple[int, str]] = field(default_factory=list)  # (start position, gtid)

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class Segmenter:
    """Feed raw events in stream order; collect the segments it cuts."""

    def __init__(
        self,
        file: str,
        position: int,
        flush_seconds: float,
        segment_max_bytes: int,
        inside_transaction: bool = False,
    ) -> None:
        """Start at `file`:`position`; `inside_transaction` when the archive ends in the
        middle of one (its last segment is `mid`), so no boundary is claimed before its end."""
        self.flush_seconds = flush_seconds
        self.segment_max_bytes = segment_max_bytes
        self.checksum_alg = ev.CHECKSUM_CRC32
        self._last_event_at = 0.0
        self._streamed = 0  # bytes fed since the last cut by time or silence
        self._open(file, position)
        self._in_txn = inside_transaction

    @property
    def position(self) -> int:
        """Where the next event of `file` must start (end of everything accepted)."""
        return self._pending.end

    def feed(self, raw: bytes, now: float) -> list[Segment]:
        """Accept one event as sent by the server; return the segments now complete."""
        timestamp, code, server_id, size, log_pos, flags = ev.check(raw, self.checksum_alg)
        if code in _HEARTBEATS:
            return self.tick(now)
        if code == ev.FORMAT_DESCRIPTION:
            self.checksum_alg = ev.fde_checksum_alg(raw)
        artificial = flags & ev.FLAG_ARTIFICIAL
        if code == ev.ROTATE and (artificial or log_pos == 0):
            return self._switch(*ev.rotate_target(raw, self.checksum_alg))
        if log_pos == 0:
            if code == ev.FORMAT_DESCRIPTION:
                return []  # replayed on a mid-file start; the file has it at offset 4
            raise ChainError(f"event type {code} without a position in {self.file}")
        if artificial:
            return []
        return self._place(raw, code, timestamp, server_id, log_pos - size, now)

    def feed_many(self, events: list[bytes], now: float) -> list[Segment]:
        """`feed` for a batch, then whatever is due by time or size."""
        out: list[Segment] = []
        self._streamed += sum(map(len, events))
        for raw in events:
            out += self.feed(raw, now)
        return out + self._due(now)

    def feed_packets(
        self, buffer: bytes, offset: int, seq: int, now: float
    ) -> tuple[int, int, list[Segment]]:
        """The hot path: accept events straight from the client's receive buffer, framed as
        the server sends them (3-byte length, sequence number, OK byte, event), from
        `offset` on while they need nothing but the short path (rows inside a transaction,
        its XID, the next MariaDB GTID), with the same checks as `feed` (packet length and
        sequence, event size, CRC32, exact position). Returns (offset, seq) of the first
        packet left for the client's ordinary path, and the segments cut.

        One loop with its state in locals, no object per event but a memoryview: the
        per-event cost of this loop bounds the archiver's throughput on a backlog."""
        out: list[Segment] = []
        pending = self._pending
        data = pending.data
        if not data:
            return offset, seq, out
        checked = self.checksum_alg == ev.CHECKSUM_CRC32  # binlog_checksum=NONE: sizes only
        unpack, crc32, limit = _PACKET_EVENT.unpack_from, zlib.crc32, self.segment_max_bytes
        view, total, first = memoryview(buffer), len(buffer), offset
        position = pending.start + len(data)
        in_txn, last_time, tail_time = self._in_txn, pending.last_time, pending.tail_time
        while total - offset >= _PACKET_EVENT.size:
            length_seq, ok, timestamp, code, server_id, size, log_pos, flags = unpack(
                buffer, offset
            )
            end = offset + _FRAME + size
            if (
                length_seq != (size + 1) | seq << 24  # one packet holding exactly this event
                or ok
                or end > total
                or size >= _MAX_SINGLE_PACKET_EVENT
                or log_pos - size != position
                or flags & ev.FLAG_ARTIFICIAL
                or size <= _MIN_CHECKED
                or (in_txn and code in _SLOW_PATH and code != ev.XID)
                or (not in_txn and code != ev.MARIADB_GTID)
            ):
                break
            event = view[offset + _FRAME : end]
            if checked and crc32(event) != _CRC32_RESIDUE:  # CRC32 of event + its CRC32
                break  # `feed` names the problem
            if not in_txn:  # a MariaDB GTID: the previous transaction ended before it
                pending.boundary, pending.boundary_time, tail_time = position, last_time, None
                pending.gtids.append((position, self._gtid(event, code, server_id)))
                in_txn = True
            data += event
            position += size
            last_time = timestamp
            if tail_time is None:
                tail_time = timestamp
            if code == ev.XID:  # the transaction ends after it
                in_txn = self._standalone = False
                pending.boundary, pending.boundary_time, tail_time = position, last_time, None
            offset, seq = end, (seq + 1) & 0xFF
            if len(data) >= limit:
                self._in_txn, pending.last_time, pending.tail_time = in_txn, last_time, tail_time
                out += self._due(now)
                pending = self._pending
                data = pending.data
                if not data:
                    break
                in_txn, last_time, tail_time = self._in_txn, pending.last_time, pending.tail_time
        if data:  # (an empty pending after a cut already holds its own state)
            self._in_txn, pending.last_time, pending.tail_time = in_txn, last_time, tail_time
        if offset != first:
            self._streamed += offset - first
            self._last_event_at = now
            out += self._due(now)
        return offset, seq, out

    def due_in(self, now: float) -> float | None:
        """Seconds until a time cut is due (None when nothing is waiting to be cut)."""
        pending = self._pending
        if not pending.data or pending.boundary <= pending.start:
            return None
        idle_due = self._last_event_at + self._idle_seconds()
        return max(0.0, min(pending.since + self.flush_seconds, idle_due) - now)

    def _idle_seconds(self) -> float:
        """Silence after which pending bytes are cut: short when at least IDLE_LARGE_BYTES
        streamed since the last cut by time (the end of a backlog or of a bulk load)."""
        if self._streamed >= IDLE_LARGE_BYTES:
            return IDLE_LARGE_SECONDS
        return self.flush_seconds * IDLE_FRACTION

    def _switch(self, file: str, position: int) -> list[Segment]:
        """The server starts sending `file` at `position` (a new dump, or the next file)."""
        if file == self.file:
            if position != self.position:
                raise ChainError(
                    f"server resumes {file} at {position}, archive stands at {self.position}"
                )
            return []
        closed: list[Segment] = []
        if self.position > len(ev.MAGIC) and not self._closed:  # ended without ROTATE/STOP
            closed = self._cut(self._pending.end, KIND_EOF)
        self._open(file, position)
        return closed

    def _open(self, file: str, position: int) -> None:
        self._closed = False
        self.file = file
        self._pending = _Pending(start=position, boundary=position)
        self._in_txn = self._standalone = False

    def _place(
        self, raw: bytes, code: int, timestamp: int, server_id: int, start: int, now: float
    ) -> list[Segment]:
        pending = self._pending
        if start != pending.start + len(pending.data):
            raise ChainError(
                f"event type {code} at {self.file}:{start} does not "
                f"follow the archive's position {pending.end}"
            )
        is_gtid = code in _GTIDS
        if is_gtid:
            self._mark_boundary(start)
        if not pending.data:
            pending.since = now
            pending.first_time = timestamp
            if pending.start == len(ev.MAGIC):  # first event of a file: the magic goes first
                pending.start = 0
                pending.boundary = 0
                pending.data += ev.MAGIC
        if is_gtid:
            pending.gtids.append((start, self._gtid(raw, code, server_id)))
        pending.data += raw
        pending.last_time = timestamp
        self._last_event_at = now
        if pending.tail_time is None:
            pending.tail_time = timestamp
        if not self._in_txn or code in _MARKERS:  # rows and table maps change nothing
            self._track_transaction(raw, code)
            if code in (ev.ROTATE, ev.STOP):
                out = self._cut(pending.end, KIND_EOF)
                self._closed = True
                if code == ev.ROTATE:
                    self._open(*ev.rotate_target(raw, self.checksum_alg))
                return out
        if len(pending.data) < self.segment_max_bytes and now - pending.since < self.flush_seconds:
            return []
        return self._due(now)

    def _gtid(self, raw: bytes | memoryview, code: int, server_id: int) -> str:
        if code == ev.MARIADB_GTID:
            gtid, flags2 = ev.mariadb_gtid(raw, server_id)
            self._standalone = bool(flags2 & ev.MARIADB_GTID_STANDALONE)
            return gtid
        self._standalone = True  # MySQL: a DDL unless a BEGIN follows
        return ""

    def _track_transaction(self, raw: bytes, code: int) -> None:
        """Note whether the stream is between transactions after this event."""
        if code in _GTIDS:
            self._in_txn = True
            return
        text = ev.query_text(raw, self.checksum_alg) if code == ev.QUERY else b""
        if text == b"BEGIN":
            self._in_txn, self._standalone = True, False
            return
        if not self._in_txn:
            ends = code != ev.MARIADB_ANNOTATE_ROWS  # FDE, GTID list, checkpoint, ROTATE...
        elif code in (ev.XID, ev.MYSQL_TRANSACTION_PAYLOAD):
            ends = True
        elif code == ev.QUERY:
            ends = self._standalone or text in (b"COMMIT", b"ROLLBACK")
        elif code == compressed.QUERY_COMPRESSED:
            ends = self._standalone
        else:
            ends = False
        if ends:
            self._in_txn = self._standalone = False
            self._mark_boundary(self._pending.end)

    def _mark_boundary(self, position: int) -> None:
        pending = self._pending
        pending.boundary = position
        pending.boundary_time = pending.last_time
        pending.tail_time = None

    def tick(self, now: float) -> list[Segment]:
        """Cut what is due by time; call when no event arrived for a while.

        A stream silent for a quarter of flush_seconds is cut then (the end of a burst
        need not wait the full flush_seconds): a busy stream is never silent that long, so
        this adds no segments under load. After IDLE_LARGE_BYTES streamed without a cut by
        time (the end of a backlog or of a bulk load) IDLE_LARGE_SECONDS of silence is enough.
        """
        pending = self._pending
        idle = now - self._last_event_at >= self._idle_seconds()
        if idle and pending.data and pending.boundary > pending.start:
            self._streamed = 0
            return self._cut(pending.boundary, KIND_TX)
        return self._due(now)

    def _due(self, now: float) -> list[Segment]:
        """Every cut due now (what remains after a cut may itself be over the size)."""
        out: list[Segment] = []
        while True:
            pending = self._pending
            size = len(pending.data)
            if size < self.segment_max_bytes and now - pending.since < self.flush_seconds:
                return out  # the common case, decided without more work
            if not size:
                return out
            cuttable = pending.boundary > pending.start
            if size >= self.segment_max_bytes:
                out += self._cut(
                    pending.boundary if cuttable else pending.end, KIND_TX if cuttable else KIND_MID
                )
            elif cuttable:
                self._streamed = 0
                out += self._cut(pending.boundary, KIND_TX)
            else:
                return out

    def _cut(self, end: int, kind: str) -> list[Segment]:
        pending = self._pending
        size = end - pending.start
        at_end = end == pending.end
        gtids = [gtid for start, gtid in pending.gtids if start < end and gtid]
        extent = Extent(
            file=self.file,
            start=pending.start,
            end=end,
            first_time=pending.first_time,
            last_time=pending.last_time if at_end else pending.boundary_time,
            first_gtid=gtids[0] if gtids else "",
            last_gtid=gtids[-1] if gtids else "",
            kind=kind,
        )
        segment = Segment(extent, bytes(memoryview(pending.data)[:size]))  # one copy
        rest = _Pending(start=end, boundary=max(pending.boundary, end))
        rest.data = pending.data[size:]
        rest.gtids = [(start, gtid) for start, gtid in pending.gtids if start >= end]
        if rest.data:
            rest.since = pending.since
            rest.first_time = (
                pending.tail_time if pending.tail_time is not None else pending.last_time
            )
            rest.last_time = rest.boundary_time = pending.last_time
            rest.tail_time = rest.first_time
        self._pending = rest
        return [segment]
