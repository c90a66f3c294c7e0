"""`on_long_query = "kill-selects"` on the real MariaDB: only a provably plain SELECT is
killed, by its statement id; anything that may write (a CTE, a stored function) skips the run
and keeps running untouched."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
ER_QUERY_INTERRUPTED = 1317


class Statement:
    """One statement running on its own root connection, in a thread, until done or killed."""

    def __init__(self, server: MariaDB, sql: str) -> None:
        self.server = server
        self.sql = sql
        self.conn = server.connect_root()
        # types-PyMySQL leaves Connection.thread_id() unannotated (it returns the int id).
        self.connection_id: int = self.conn.thread_id()  # type: ignore[no-untyped-call]
        self.error: int | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(self.sql)
                cursor.fetchall()
        except pymysql.err.MySQLError as exc:
            self.error = int(exc.args[0])
        finally:
            self.done.set()

    def start(self, age: float = 1.0) -> int:
        """Start it; return its QUERY_ID once it has run `age` seconds (polled: no event)."""
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = self.server.sql(
                "SELECT QUERY_ID FROM information_schema.PROCESSLIST "
                f"WHERE ID = {self.connection_id} AND TIME >= {age} AND COMMAND = 'Query'"
            )
            if rows:
                return int(rows[0][0])
            time.sleep(0.1)
        raise AssertionError(f"{self.sql!r} did not run for {age}s")

    def running_query_id(self) -> int | None:
        rows = self.server.sql(
            "SELECT QUERY_ID FROM information_schema.PROCESSLIST "
            f"WHERE ID = {self.connection_id} AND COMMAND = 'Query'"
        )
        return int(rows[0][0]) if rows else None

    def stop(self) -> None:
        self.server.sql(f"KILL {self.connection_id}")
        self.done.wait(10)
        self.conn.close()


@pytest.fixture
def schema(live_mariadb: MariaDB) -> Iterator[str]:
    """A table, a stored function that writes a row then runs for a minute, a view calling it."""
    name = f"ks_{uuid.uuid4().hex[:8]}"
    live_mariadb.sql(f"CREATE DATABASE {name}")
    live_mariadb.sql(f"CREATE TABLE {name}.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    live_mariadb.sql(
        f"CREATE FUNCTION {name}.write_slowly(x INT) RETURNS INT DETERMINISTIC "
        f"MODIFIES SQL DATA BEGIN INSERT INTO {name}.t (v) VALUES (x); "
        "RETURN (SELECT SLEEP(60)); END"
    )
    live_mariadb.sql(f"CREATE VIEW {name}.report AS SELECT {name}.write_slowly(1) AS x")
    try:
        yield name
    finally:
        live_mariadb.sql(f"DROP DATABASE {name}")


@pytest.mark.parametrize(
    "template",
    [
        "SELECT {db}.write_slowly(1)",
        "SELECT x FROM {db}.report",
        "WITH w AS (SELECT 1 AS a) SELECT {db}.write_slowly(a) FROM w",
        "WITH w AS (SELECT SLEEP(60) AS s) SELECT s FROM w",  # a read, but WITH: not judged
    ],
    ids=["stored-function", "view-calling-function", "cte-with-function", "cte"],
)
def test_kill_selects_never_kills_what_may_write(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    schema: str,
    template: str,
) -> None:
    snap_config["snapshot"]["on_long_query"] = "kill-selects"
    start_daemon(write_config(snap_config))
    statement = Statement(live_mariadb, template.format(db=schema))
    query_id = statement.start()
    try:
        record = take(snap_config["daemon"]["socket"])
        still_running = statement.running_query_id()
    finally:
        statement.stop()
    assert record["state"] == "skipped", record
    assert record["error_code"] == "long_query_running"
    assert still_running == query_id and statement.error != ER_QUERY_INTERRUPTED


def test_kill_selects_kills_a_plain_select_by_its_query_id(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
) -> None:
    snap_config["snapshot"]["on_long_query"] = "kill-selects"
    daemon = start_daemon(write_config(snap_config))
    statement = Statement(live_mariadb, "/* report */ SELECT SLEEP(60), CONCAT('a', '(')")
    query_id = statement.start()
    try:
        record = take(snap_config["daemon"]["socket"])
        assert statement.done.wait(10), "the statement was not killed"
    finally:
        statement.stop()
    assert record["state"] == "completed", record
    assert statement.error == ER_QUERY_INTERRUPTED  # KILL QUERY: the connection lives on
    assert f"query_id={query_id}" in daemon.log()
