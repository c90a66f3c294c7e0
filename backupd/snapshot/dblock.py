"""The commit-blocking database lock, on its own connection with its own timeouts.

MariaDB >= 10.4: `BACKUP STAGE START` + `BACKUP STAGE BLOCK_COMMIT` (reads and non-committing
writes go on); MySQL and older MariaDB: `FLUSH TABLES WITH READ LOCK`. A short
`lock_wait_timeout` bounds how long the lock request can hold writers behind it. The lock is
connection-scoped: if this process dies the server drops it with the connection, and
`abort()` (the deadline thread) ends it from a second connection with `KILL CONNECTION`.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

import pymysql

from backupd import database
from backupd.config import MysqlSection
from backupd.database import ServerVersion
from backupd.errors import DatabaseUnavailable, LockFailed
from backupd.log import get_logger
from backupd.snapshot.long_queries import LongQuery, kill_statement, list_long_queries

_log = get_logger("snapshot")
RELEASER_TIMEOUT = 5  # seconds for the KILL on the second connection

# The server's answer to a kill whose statement or thread is gone: nothing left to kill.
_GONE = (1094, 1957)  # ER_NO_SUCH_THREAD, ER_NO_SUCH_QUERY


@dataclass(frozen=True)
class ServerLayout:
    """Where the server keeps its data and binlogs, and its identity in the binlog archive."""

    identity: str = ""
    datadir: str = ""
    log_bin_basename: str = ""


@dataclass(frozen=True)
class LockedState:
    coordinate: str
    gtid: str
    locked_at: float


def uses_backup_stage(version: ServerVersion) -> bool:
    return version.flavor == "mariadb" and version.at_least(10, 4)


def lock_statements(version: ServerVersion) -> tuple[list[str], list[str]]:
    """(statements that block commits, statements that release them) for this server."""
    if uses_backup_stage(version):
        return ["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"], ["BACKUP STAGE END"]
    return ["FLUSH TABLES WITH READ LOCK"], ["UNLOCK TABLES"]


def read_layout(conn: Any, version: ServerVersion) -> ServerLayout:
    """Read before the lock (it does not change while the server runs)."""
    ident = database.identity_variable(version)
    try:
        row = database.query_one(
            conn,
            f"SELECT @@GLOBAL.{ident} AS ident, @@GLOBAL.datadir AS datadir, "
            "@@GLOBAL.log_bin_basename AS basename",
        )
    except pymysql.err.MySQLError:
        return ServerLayout()  # old servers without log_bin_basename: restore falls back
    if not row:
        return ServerLayout()
    return ServerLayout(
        str(row["ident"] or ""),
        str(row["datadir"] or "").rstrip("/"),
        str(row["basename"] or ""),
    )


class DatabaseLock:
    """connect -> long_queries / flush -> prepare -> lock -> read state -> unlock (or close:
    dropped)."""

    def __init__(self, section: MysqlSection, lock_timeout_seconds: float) -> None:
        io_timeout = lock_timeout_seconds + section.connect_timeout_seconds + 5
        self.conn: Any = database.connect(
            section, read_timeout=io_timeout, write_timeout=io_timeout
        )
        self.section = section
        self.locked = False
        self.aborted = False
        self.releaser: Any = None  # the second connection abort() kills the lock from
        self.prepared = False  # prepare() ran (the releaser may still be None: it failed)
        try:
            self.version = database.server_version(self.conn)
            self.layout = read_layout(self.conn, self.version)
            self._execute(
                f"SET SESSION lock_wait_timeout = {max(1, math.ceil(lock_timeout_seconds))}"
            )
        except BaseException:
            self.close()
            raise

    def _execute(self, sql: str) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql)
        except (pymysql.err.MySQLError, OSError) as exc:
            raise LockFailed(statement=sql, reason=database.describe(exc)) from exc

    def long_queries(self, older_than: float) -> list[LongQuery]:
        """Statements running for `older_than` seconds or more, which a lock would queue behind."""
        return list_long_queries(self.conn, self.version, older_than)

    def kill_query(self, query: LongQuery) -> bool:
        """Kill that statement (not its thread's next one); False when it already ended."""
        try:
            return kill_statement(self.conn, self.version, query)
        except (pymysql.err.MySQLError, OSError) as exc:
            if isinstance(exc, pymysql.err.MySQLError) and exc.args and exc.args[0] in _GONE:
                return False
            raise LockFailed(statement="KILL QUERY", reason=database.describe(exc)) from exc

    def flush_tables(self) -> None:
        """Unlocked flush first so the flush done under the lock has little left to do."""
        self._execute("FLUSH NO_WRITE_TO_BINLOG TABLES")

    def lock(self) -> LockedState:
        """Block commits, then read the coordinate and GTID state they are frozen at."""
        block, _release = lock_statements(self.version)
        self.prepare()
        for statement in block:
            self.locked = True  # from the first statement on, release must run
            self._execute(statement)
        locked_at = time.time()
        try:
            coordinate = database.binlog_coordinate(self.conn, self.version)
            gtid = database.gtid_position(self.conn, self.version)
        except (pymysql.err.MySQLError, OSError) as exc:
            raise LockFailed(statement="read binlog state", reason=database.describe(exc)) from exc
        return LockedState(str(coordinate) if coordinate else "", gtid, locked_at)

    def prepare(self) -> None:
        """Connect the second session before commits are blocked (and before the lock's
        budget starts), so a release never waits on a new connection; without it, abort()
        still closes the lock's socket. Once per lock; lock() calls it if nobody did."""
        if self.prepared:
            return
        self.prepared = True
        try:
            self.releaser = database.connect(
                self.section, read_timeout=RELEASER_TIMEOUT, write_timeout=RELEASER_TIMEOUT
            )
        except DatabaseUnavailable as exc:
            _log.warning("no second connection to release the lock from", error=exc.message)

    def abort(self) -> None:
        """From another thread: end the lock's session now (the server then drops the lock)."""
        self.aborted = True
        session = self.conn.thread_id()
        try:
            with self.releaser.cursor() as cursor:
                cursor.execute(f"KILL CONNECTION {int(session)}")
            _log.warning("commit lock released by KILL CONNECTION", session=session)
        except (AttributeError, pymysql.err.MySQLError, OSError) as exc:
            _log.warning("KILL CONNECTION failed; closing the lock's socket", error=str(exc))
            with contextlib.suppress(AttributeError, OSError):
                self.conn._sock.shutdown(socket.SHUT_RDWR)

    def unlock(self) -> None:
        if self.aborted:  # the session is gone, and the lock with it
            self.locked = False
        if not self.locked:
            return
        _block, release = lock_statements(self.version)
        try:
            for statement in release:
                self._execute(statement)
        finally:
            self.locked = False

    def close(self) -> None:
        """Closing drops any lock still held (the server releases it with the session)."""
        with contextlib.suppress(Exception):  # already gone: the lock went with it
            self.conn.close()
        if self.releaser is not None:
            with contextlib.suppress(Exception):
                self.releaser.close()
