"""A steady writer for snapshot tests and the stall benchmark: one autocommit INSERT per
tick, each commit's start and end time recorded (each commit is one GTID)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from tests.testbed.mariadb import MariaDB


@dataclass(frozen=True)
class Commit:
    row_id: int
    started: float
    ended: float

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Writer:
    server: MariaDB
    table: str  # schema.table, created by start()
    interval: float = 0.005  # pause between commits (0: as fast as possible)
    jitter: bool = False  # pause a random 0..2*interval instead (no fixed phase to a stall)
    commits: list[Commit] = field(default_factory=list)
    error: BaseException | None = None
    gtid_before: str = ""  # @@gtid_binlog_pos just before the first INSERT
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _committed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Writer:
        schema = self.table.split(".")[0]
        self.server.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
        self.server.sql(
            f"CREATE TABLE IF NOT EXISTS {self.table} "
            "(id INT AUTO_INCREMENT PRIMARY KEY, at DOUBLE NOT NULL) ENGINE=InnoDB"
        )
        self.gtid_before = str(self.server.sql("SELECT @@gtid_binlog_pos")[0][0])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _pause(self) -> float:
        return random.uniform(0, 2 * self.interval) if self.jitter else self.interval

    def _run(self) -> None:
        try:
            with self.server.connect_root() as conn, conn.cursor() as cursor:
                while not self._stop.is_set():
                    started = time.time()
                    cursor.execute(f"INSERT INTO {self.table} (at) VALUES (%s)", (started,))
                    with self._committed:
                        self.commits.append(Commit(int(cursor.lastrowid), started, time.time()))
                        self._committed.notify_all()
                    if self.interval:
                        self._stop.wait(self._pause())
        except BaseException as exc:
            self.error = exc

    def wait_for_commits(self, count: int, timeout: float = 60) -> None:
        """Block until the writer has committed `count` rows (its commits are the event)."""
        with self._committed:
            if not self._committed.wait_for(
                lambda: len(self.commits) >= count or self.error, timeout
            ):
                raise TimeoutError(f"writer committed {len(self.commits)} of {count} rows")
        if self.error is not None:
            raise self.error

    def stop(self) -> list[Commit]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if self.error is not None:
            raise self.error
        return self.commits
