"""What the server says about continuity: identity, GTID position, start time, file heads.

The impure half of `backupd.binlog.timeline`: each answer comes from the server itself (a
query, or the first bytes of a binlog file read over the replication protocol), so the pure
decision can be tested apart.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import pymysql

from backupd import database
from backupd.binlog import archive, layout
from backupd.binlog.client import BinlogStream, ServerError, StreamEnded
from backupd.binlog.events import HEARTBEATS, MAGIC, ROTATE, Header
from backupd.binlog.timeline import ArchiveEnd, ServerView
from backupd.config import MysqlSection
from backupd.errors import DatabaseUnavailable

HEAD_BYTES = 64 * 1024  # how much of a file's beginning is compared with the archive


def server_state(conn: Any) -> tuple[str | None, float]:
    """(GTID position text, None where GTIDs are not MariaDB's; server start time)."""
    try:
        version = database.server_version(conn)
        gtid: str | None = None
        if version.flavor == "mariadb":
            row = database.query_one(conn, "SELECT @@GLOBAL.gtid_current_pos AS pos")
            gtid = str(row["pos"] if row else "")
        row = database.query_one(conn, "SHOW GLOBAL STATUS LIKE 'Uptime'")
        uptime = float(row["Value"]) if row else 0.0
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailable(message=database.describe(exc)) from exc
    return gtid, time.time() - uptime


def server_head(section: MysqlSection, server_id: int, file: str, length: int) -> bytes:
    """The first `length` bytes of `file` as the server holds it (fewer if it is shorter)."""
    stream = BinlogStream.connect(section)
    head = bytearray(MAGIC)
    try:
        stream.dump(server_id, file, len(MAGIC), 1.0)
        while len(head) < length:
            raw = stream.next_event(2.0)
            if raw is None:
                break  # nothing more written yet: the file is shorter
            header = Header.parse(raw)
            if header.artificial or header.log_pos == 0 or header.type_code in HEARTBEATS:
                continue  # the fake ROTATE and heartbeats are not in the file
            head += raw
            if header.type_code == ROTATE:
                break  # the file's last event: what follows belongs to the next file
    except (StreamEnded, ServerError):
        pass  # the file ends (or is gone): compare what there is
    finally:
        stream.close()
    return bytes(head[:length])


def locate_after(conn: Any, logs: list[tuple[str, int]], archived: dict[int, int]) -> str:
    """`file:pos` of the first transaction in the server's binlogs whose GTID the archive
    does not hold ("" when the server's binlogs do not reach back far enough to tell).

    The newest file whose starting GTID list the archive contains is scanned forward."""
    names = [name for name, _ in logs]
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cursor:
            first = ""
            for name in reversed(names):
                cursor.execute(f"SHOW BINLOG EVENTS IN '{_quote(name)}' LIMIT 4")
                listed = [r for r in cursor.fetchall() if r["Event_type"] == "Gtid_list"]
                start = archive.gtid_position(str(listed[0]["Info"]).strip("[]")) if listed else {}
                if all(archived.get(d, -1) >= seq for d, seq in start.items()):
                    first = name
                    break
            if not first:
                return ""
            for name in names[names.index(first) :]:
                cursor.execute(f"SHOW BINLOG EVENTS IN '{_quote(name)}'")
                for row in cursor.fetchall():
                    if row["Event_type"] != "Gtid":
                        continue
                    parsed = archive.parse_gtid(str(row["Info"]).split()[-1])
                    if parsed and parsed[1] > archived.get(parsed[0], -1):
                        return f"{name}:{int(row['Pos'])}"
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailable(message=database.describe(exc)) from exc
    last, size = logs[-1]
    return f"{last}:{size}"


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


def describe_server(conn: Any) -> str:
    """The server identity used in keys: server_uuid on MySQL, server_id on MariaDB."""
    try:
        version = database.server_version(conn)
        variable = database.identity_variable(version)
        row = database.query_one(conn, f"SELECT @@GLOBAL.{variable} AS ident")
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailable(message=database.describe(exc)) from exc
    return str(row["ident"]) if row else "unknown"


class ServerProbe(Protocol):
    """What the archiver asks the server about continuity (a fake in unit tests)."""

    def identity(self) -> str: ...

    def view(
        self,
        identity: str,
        logs: list[tuple[str, int]],
        end: ArchiveEnd,
        archived_head: bytes | None,
    ) -> ServerView: ...

    def locate_after(self, logs: list[tuple[str, int]], archived: dict[int, int]) -> str: ...


class MysqlProbe:
    """The real server, over its own short connections."""

    def __init__(self, section: MysqlSection) -> None:
        self.section = section

    def identity(self) -> str:
        conn = database.connect(self.section)
        try:
            return describe_server(conn)
        finally:
            conn.close()

    def view(
        self,
        identity: str,
        logs: list[tuple[str, int]],
        end: ArchiveEnd,
        archived_head: bytes | None,
    ) -> ServerView:
        return view(self.section, identity, logs, end, archived_head)

    def locate_after(self, logs: list[tuple[str, int]], archived: dict[int, int]) -> str:
        conn = database.connect(self.section)
        try:
            return locate_after(conn, logs, archived)
        finally:
            conn.close()


def view(
    section: MysqlSection,
    identity: str,
    logs: list[tuple[str, int]],
    end: ArchiveEnd,
    archived_head: bytes | None,
) -> ServerView:
    """The server as `timeline.decide` needs it; `archived_head` is the archive's first bytes
    of `end.file` (None: compare sizes only, for a closed file)."""
    conn = database.connect(section)
    try:
        gtid, started_at = server_state(conn)
    finally:
        conn.close()
    sizes = dict(logs)
    matches: bool | None = None
    if end.file in sizes:
        if archived_head is None:
            matches = not end.closed or sizes[end.file] == end.position
        else:
            theirs = server_head(section, section.server_id, end.file, len(archived_head))
            matches = theirs == archived_head[: len(theirs)] and (
                len(theirs) == len(archived_head) or sizes[end.file] < end.position
            )
    position = None if gtid is None else archive.gtid_position(gtid)
    return ServerView(identity, logs, position, started_at, matches, gtid or "")


def archive_end(timeline: archive.Timeline, extra: list[layout.SegmentKey]) -> ArchiveEnd:
    """The latest timeline's end, counting spooled segments not uploaded yet (`extra`)."""
    merged = archive.Timeline(timeline.history, timeline.segments + extra, timeline.gaps)
    file, position, kind = merged.end()
    return ArchiveEnd(
        timeline=merged.id,
        identity=merged.history.identity,
        file=file,
        position=position,
        closed=kind == "eof",
        boundary=merged.boundary(),
        gtid=merged.end_gtid(),
        last_time=merged.last_time(),
    )
