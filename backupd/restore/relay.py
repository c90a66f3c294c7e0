"""Replay through the target's own replication applier: the relay-log method (MariaDB).

The rebuilt binlog files of each range are laid out as relay logs of a replication
connection of our own (`backupd_replay`) in the target's data directory, the last one cut at
the exact end point, and the server's SQL thread applies them with parallel workers from
exactly the snapshot's coordinate. No client session re-parses the events, and the workers
commit in parallel (their fsyncs group), which is where the speed comes from.

MariaDB 10.11's traps, each handled here: the connection never uses GTIDs to position
(MASTER_USE_GTID=no, else it would skip or refetch by GTID); events carrying the applier's
own server_id are skipped silently, so the target runs with an id no event carries during
the replay; replicated DDL is idempotent by default (slave_ddl_exec_mode), so it is STRICT
during the replay and a conflict fails as it does through the pipe; stale master/relay-log
info of the connection is removed before it is created; the relay log index is written
before the connection exists (the server caches it after); an SQL error stops the thread and
is reported, never waited on. A crash mid-way leaves only relay logs that end at the end
point: they can never replay past it. Each range of a multi-timeline plan is one
connection's life, so nothing of one timeline leaks into the next. Temporary tables and
session state cross file boundaries inside the SQL thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from backupd.database import describe
from backupd.log import get_logger
from backupd.restore.relay_layout import RelayFiles, free_server_id, lay_out, own, scan
from backupd.restore.relay_target import Method, connect
from backupd.restore.replay import Progress, ReplayFailed, ReplayRange, ReplayServer

_log = get_logger("relay")
CONNECTION = "backupd_replay"
_DUMMY_HOST = "backupd-replay.invalid"  # never contacted: only the SQL thread ever runs
_NO_SUCH_CONNECTION = 1617
_IDLE_WORKER = "Waiting for work"
# Changed for the replay and put back: the id, the workers, and DDL conflicts failing (the
# default IDEMPOTENT would turn a replayed CREATE TABLE into CREATE OR REPLACE).
_SAVED = ("server_id", "slave_parallel_threads", "slave_ddl_exec_mode")
STALL_SECONDS = 60.0  # all relay logs read, no worker busy, position unchanged: a stall


@dataclass(frozen=True)
class SlaveStatus:
    relay_file: str
    relay_pos: int
    master_file: str
    master_pos: int
    sql_running: bool
    errno: int
    error: str
    state: str

    def where(self) -> str:
        return (
            f"relay log {self.relay_file}:{self.relay_pos} ({self.master_file}:{self.master_pos})"
        )


class _Session:
    """The statements of the relay method on one target connection."""

    def __init__(self, conn: pymysql.connections.Connection[Any]) -> None:
        self.conn = conn
        self.name = conn.escape(CONNECTION)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def variable(self, name: str) -> Any:
        return self.run(f"SELECT @@GLOBAL.{name}")[0][0]

    def status(self) -> SlaveStatus:
        with self.conn.cursor() as cur:
            cur.execute(f"SHOW SLAVE {self.name} STATUS")
            names = [d[0] for d in cur.description or ()]
            row = cur.fetchone()
        if row is None:
            raise ReplayFailed(f"the replication connection {CONNECTION} vanished")
        each = dict(zip(names, row, strict=True))
        return SlaveStatus(
            str(each["Relay_Log_File"]),
            int(each["Relay_Log_Pos"]),
            str(each["Relay_Master_Log_File"]),
            int(each["Exec_Master_Log_Pos"]),
            each["Slave_SQL_Running"] == "Yes",
            int(each["Last_SQL_Errno"] or 0),
            str(each["Last_SQL_Error"] or ""),
            str(each.get("Slave_SQL_Running_State") or ""),
        )

    def busy_workers(self) -> int:
        rows = self.run(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Slave_worker' "
            f"AND COALESCE(state, '') NOT LIKE '{_IDLE_WORKER}%'"
        )
        return int(rows[0][0])

    def drop_connection(self, datadir: Path) -> None:
        """STOP + RESET SLAVE ALL (the server removes its relay logs and info files), then
        whatever info files a crashed earlier run left that the server no longer knows."""
        for sql in (f"STOP SLAVE {self.name}", f"RESET SLAVE {self.name} ALL"):
            try:
                self.run(sql)
            except pymysql.err.MySQLError as exc:
                if exc.args[0] != _NO_SUCH_CONNECTION:
                    raise
        for stale in (f"master-{CONNECTION}.info", f"relay-log-{CONNECTION}.info"):
            (datadir / stale).unlink(missing_ok=True)

    def create(self, extra: str = "") -> None:
        self.run(
            f"CHANGE MASTER {self.name} TO MASTER_HOST={self.conn.escape(_DUMMY_HOST)}, "
            f"MASTER_USE_GTID=no{extra}"
        )

    def probe(self, datadir: Path) -> tuple[Path, str, str]:
        """Create the connection once to learn where and how the server names its relay logs:
        (directory, base name, index entry prefix); then drop it with its files."""
        self.create()
        first = self.status().relay_file
        base = first.rpartition(".")[0]
        index = next(
            (p for p in _index_candidates(datadir, self.variable("relay_log"), base) if p.exists()),
            None,
        )
        if index is None:
            self.drop_connection(datadir)
            raise ReplayFailed(f"cannot find the relay log index of {base} under {datadir}")
        entry = index.read_text().splitlines()[0]
        prefix = entry[: -len(first)]
        self.drop_connection(datadir)
        for leftover in index.parent.glob(f"{base}.*"):
            leftover.unlink()
        return index.parent, base, prefix


def _index_candidates(datadir: Path, relay_log: str | None, base: str) -> list[Path]:
    found = [datadir / f"{base}.index"]
    if relay_log:
        found.insert(0, (datadir / relay_log).parent / f"{base}.index")
    return found


def replay_relay(
    ranges: Sequence[ReplayRange],
    server: ReplayServer,
    method: Method,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 1.0,
) -> Progress:
    """Apply every range through the target's SQL thread; ReplayFailed with the server's
    error when a transaction fails, or when the applier stops or stalls before the end."""
    progress = Progress(sum(r.total_bytes() for r in ranges), time.monotonic())
    scanned = [scan(r) for r in ranges]
    taken = frozenset(i for s in scanned for i in s.server_ids)
    with connect(server) as conn:
        session = _Session(conn)
        datadir = Path(str(session.variable("datadir")))
        saved = {name: session.variable(name) for name in _SAVED}
        try:
            session.drop_connection(datadir)
            replay_id = free_server_id(int(saved["server_id"]), taken)
            if replay_id != int(saved["server_id"]):
                session.run(f"SET GLOBAL server_id = {replay_id}")
            session.run(f"SET GLOBAL slave_parallel_threads = {int(method.workers)}")
            session.run("SET GLOBAL slave_ddl_exec_mode = 'STRICT'")
            base = 0
            for replay_range in ranges:
                _apply_range(session, datadir, replay_range, method, progress, base, on_progress,
                             progress_interval)  # fmt: skip
                base += replay_range.total_bytes()
        except pymysql.err.MySQLError as exc:
            raise ReplayFailed(
                f"the target failed a statement of the relay replay: {describe(exc)}"
            ) from exc
        except OSError as exc:
            raise ReplayFailed(f"cannot lay out the relay logs: {exc}") from exc
        finally:
            _restore(session, datadir, saved)
    progress.events = sum(s.events for s in scanned)
    progress.done_bytes = progress.total_bytes
    if on_progress:
        on_progress(progress)
    return progress


def _restore(session: _Session, datadir: Path, saved: dict[str, Any]) -> None:
    """Leave the target as found: no connection, no relay logs, its own settings back."""
    try:
        session.drop_connection(datadir)
        for name, value in saved.items():
            session.run(f"SET GLOBAL {name} = {session.conn.escape(value)}")
    except pymysql.err.MySQLError as exc:  # the replay's own outcome is what the caller sees
        _log.warning(
            "could not leave the target as found after the relay replay",
            error=describe(exc),
            settings=", ".join(f"{k}={v}" for k, v in saved.items()),
        )


def _apply_range(
    session: _Session,
    datadir: Path,
    replay_range: ReplayRange,
    method: Method,
    progress: Progress,
    base: int,
    on_progress: Callable[[Progress], None] | None,
    interval: float,
) -> None:
    directory, relay_base, prefix = session.probe(datadir)
    owner = datadir.stat()
    names, sizes = lay_out(replay_range, directory, relay_base, owner)
    files = RelayFiles(directory, relay_base, prefix, names, sizes)
    files.index.write_text("".join(f"{prefix}{name}\n" for name in names))
    own(files.index, owner)
    start, stop = replay_range.start_position, sizes[-1]
    escape = session.conn.escape
    session.create(
        f", RELAY_LOG_FILE={escape(names[0])}, RELAY_LOG_POS={start}, "
        f"MASTER_LOG_FILE={escape(replay_range.files[0].name)}, MASTER_LOG_POS={start}"
    )
    first = session.status()
    if (first.relay_file, first.relay_pos) != (names[0], start):
        raise ReplayFailed(
            f"the applier would start at {first.where()}, not at the snapshot's coordinate "
            f"{replay_range.files[0].name}:{start}"
        )
    session.run(f"SET GLOBAL {CONNECTION}.slave_parallel_mode = {escape(method.mode)}")
    session.run(
        f"START SLAVE {session.name} SQL_THREAD UNTIL RELAY_LOG_FILE={escape(names[-1])}, "
        f"RELAY_LOG_POS={stop}"
    )
    watcher = _Watcher(session, files, start, stop, progress, base, on_progress, interval)
    watcher.wait()
    session.run(f"STOP SLAVE {session.name} SQL_THREAD")
    final = session.status()
    if final.errno:
        raise _sql_error(final)
    if not watcher.reached(final):
        raise ReplayFailed(f"the applier stopped at {final.where()}, before the end point")


def _sql_error(status: SlaveStatus) -> ReplayFailed:
    return ReplayFailed(
        f"the server's SQL thread stopped with error {status.errno} at {status.where()}: "
        f"{status.error}"
    )


class _Watcher:
    """Polls SHOW SLAVE STATUS until the group position reaches the end point; fails on an
    SQL error, on the thread stopping early, or on a stall (everything read, nothing busy,
    nothing moving). The poll interval starts short and backs off to half a second."""

    def __init__(
        self,
        session: _Session,
        files: RelayFiles,
        start: int,
        stop: int,
        progress: Progress,
        base: int,
        on_progress: Callable[[Progress], None] | None,
        interval: float,
    ) -> None:
        self.session, self.files, self.start, self.stop = session, files, start, stop
        self.progress, self.base = progress, base
        self.on_progress, self.interval = on_progress, interval
        self.last_report = 0.0
        self.stall_seconds = STALL_SECONDS

    def reached(self, status: SlaveStatus) -> bool:
        number = self.files.number(status.relay_file)
        last = len(self.files.names)
        return number > last or (number == last and status.relay_pos >= self.stop)

    def done_bytes(self, status: SlaveStatus) -> int:
        number = self.files.number(status.relay_file)
        if number < 1 or number > len(self.files.names):
            return self.base if number < 1 else self.base + sum(self.files.sizes) - self.start
        before = sum(self.files.sizes[: number - 1])
        return self.base + max(0, before + status.relay_pos - self.start)

    def wait(self) -> None:
        pause, still_since, seen = 0.02, time.monotonic(), ("", -1)
        while True:
            status = self.session.status()
            if status.errno:
                raise _sql_error(status)
            if self.reached(status):
                return
            if not status.sql_running:
                raise ReplayFailed(f"the applier stopped at {status.where()}, before the end point")
            now = time.monotonic()
            if (status.relay_file, status.relay_pos) != seen:
                seen, still_since = (status.relay_file, status.relay_pos), now
                self._report(status, now)
            elif now - still_since > self.stall_seconds and self._idle(status):
                raise ReplayFailed(
                    f"the applier read every relay log but stays at {status.where()}, before "
                    "the end point (events skipped?)"
                )
            time.sleep(pause)  # no event to wait on: the server reports progress only here
            pause = min(0.5, pause * 1.5)

    def _idle(self, status: SlaveStatus) -> bool:
        return "read all relay log" in status.state and not self.session.busy_workers()

    def _report(self, status: SlaveStatus, now: float) -> None:
        self.progress.done_bytes = self.done_bytes(status)
        if self.on_progress and now - self.last_report >= self.interval:
            self.on_progress(self.progress)
            self.last_report = now
