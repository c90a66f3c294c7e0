"""Re-archive a hole from the server while it still has the file.

A range can go missing after it was streamed (a spool lost before upload, an object
deleted by hand, uploads that never finished): the periodic check finds it
(`Timeline.holes`) and this reads exactly that range again over the replication protocol,
checks every event (size, CRC, position chain), and stores it as a segment of the same
timeline. Keys come from the content, so a range stored twice is the same object.
"""

from __future__ import annotations

from pathlib import Path

from backupd.binlog import events
from backupd.binlog.archive import Hole
from backupd.binlog.client import BinlogStream, ServerError, StreamEnded
from backupd.binlog.spool import SpoolEntry
from backupd.binlog.uploader import Target, encode
from backupd.config import MysqlSection
from backupd.errors import ArchiveCorrupt

_READ_TIMEOUT = 5.0


def read_range(
    section: MysqlSection, file: str, start: int, end: int | None
) -> tuple[bytes, int, int]:
    """Bytes [start, end) of `file` from the server (to its ROTATE when `end` is None), and
    the first and last event timestamps. ArchiveCorrupt when they cannot be read exactly."""
    stream = BinlogStream.connect(section)
    data = bytearray(events.MAGIC if start == 0 else b"")
    position = max(start, len(events.MAGIC))
    alg = events.CHECKSUM_OFF
    first_time = last_time = 0
    try:
        stream.dump(section.server_id, file, len(events.MAGIC), 1.0)
        while end is None or position < end:
            raw = stream.next_event(_READ_TIMEOUT)
            if raw is None:
                raise ArchiveCorrupt(f"{file}: the server sent nothing past {position}")
            header = events.verify(raw, alg)
            if header.type_code == events.FORMAT_DESCRIPTION:
                alg = events.fde_checksum_alg(raw)
            if header.artificial or header.log_pos == 0:
                if header.type_code == events.ROTATE and position > len(events.MAGIC):
                    break  # the server moved on: the file ended without a ROTATE (a crash)
                continue  # the fake ROTATE at the start, heartbeats: not in the file
            offset = header.log_pos - header.event_size
            if offset < position:
                continue  # before the hole: read only to learn the checksum setting
            if offset != position:
                raise ArchiveCorrupt(f"{file}: event at {offset}, expected one at {position}")
            data += raw
            position = header.log_pos
            first_time = first_time or header.timestamp
            last_time = header.timestamp
            if header.type_code == events.ROTATE and end is None:
                break
    except (StreamEnded, ServerError) as exc:
        raise ArchiveCorrupt(f"{file}: cannot read {start}..{end} from the server: {exc}") from exc
    finally:
        stream.close()
    if end is not None and position != end:
        raise ArchiveCorrupt(f"{file}: the server's events end at {position}, not at {end}")
    return bytes(data), first_time, last_time


def refill(section: MysqlSection, target: Target, stream: str, hole: Hole) -> int:
    """Read the hole from the server and store it in `stream`; the bytes stored."""
    raw, first_time, last_time = read_range(section, hole.file, hole.start, hole.end)
    end = hole.start + len(raw)
    whole = SpoolEntry(
        path=Path("/dev/null"),
        file=hole.file,
        start=hole.start,
        end=end,
        first_time=first_time,
        last_time=last_time,
        first_gtid="",
        last_gtid="",
        kind="eof" if hole.end is None else "mid",  # "mid": no boundary claimed
    )
    encoded = encode(stream, whole, raw, target.compression, target.level)
    target.store().put(encoded.key.key, encoded.body)
    return len(raw)
