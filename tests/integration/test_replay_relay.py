"""The relay-log method on real servers: the target's own SQL thread applies the binlogs.

History recorded on the session server: a temporary table spanning a rotation, a server
restart, more writes; replayed through a second server's parallel applier from an exact
start to an exact end, then checked row by row and by checksum. Then: a transaction that
fails on the target fails the replay with the server's error; a target that shares the
binlogs' server_id still applies everything; a plan of several ranges; and `auto` choosing
the pipe (saying why) for a target whose binlog would miss replicated transactions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.errors import RelayUnavailable
from backupd.restore.relay import CONNECTION, replay_relay
from backupd.restore.relay_target import Method, choose
from backupd.restore.replay import ReplayFailed, ReplayRange, ReplayServer
from tests.integration.test_replay import coordinate, copy_binlogs, table_checksum
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

RELAY = Method("relay", "test", 4, "optimistic")


@pytest.fixture(scope="module")
def applier(scratch: Path) -> Iterator[MariaDB]:
    """A restored-server stand-in: binlog on, log_slave_updates on (what relay needs)."""
    server = MariaDB(
        scratch / "applier", scratch / "applier" / "data", server_id=7,
        extra="log_slave_updates = ON\nskip-slave-start\n",
    )  # fmt: skip
    try:
        yield server.install()
    finally:
        server.stop()


def target_of(server: MariaDB) -> ReplayServer:
    return ReplayServer(socket=server.socket, user="root")


def left_as_found(server: MariaDB, server_id: int) -> None:
    """No replication connection, no relay log, the settings the replay changed put back."""
    assert server.sql("SHOW ALL SLAVES STATUS") == []
    assert not [p for p in server.datadir.iterdir() if CONNECTION in p.name]
    row = server.sql("SELECT @@server_id, @@slave_ddl_exec_mode")[0]
    assert row == (server_id, "IDEMPOTENT")


def test_relay_replays_rotation_temporary_table_and_restart(
    live_mariadb: MariaDB, applier: MariaDB, tmp_path: Path
) -> None:
    source = live_mariadb
    source.sql("DROP DATABASE IF EXISTS relay_t")
    applier.sql("DROP DATABASE IF EXISTS relay_t")
    assert choose("auto", target_of(applier), "mariadb").name == "relay"
    start_file, start_pos = coordinate(source)
    with source.connect_root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE relay_t")
        cur.execute("CREATE TABLE relay_t.rows (id INT PRIMARY KEY, v VARCHAR(64))")
        cur.execute("INSERT INTO relay_t.rows VALUES (1,'a'),(2,'b')")
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute("CREATE TEMPORARY TABLE relay_t.scratch (id INT, v VARCHAR(64))")
        cur.execute("INSERT INTO relay_t.scratch VALUES (10,'x'),(11,'y')")
        source.sql("FLUSH BINARY LOGS")  # the temporary table now spans two files
        cur.execute("INSERT INTO relay_t.rows SELECT * FROM relay_t.scratch")
        cur.execute("SET SESSION binlog_format = 'ROW'")
        cur.execute("UPDATE relay_t.rows SET v = CONCAT(v, '!') WHERE id > 1")
    source.stop()
    source.start()  # a restart: the file ends without a rotation, the next one begins
    for number in range(20, 40):
        source.sql(f"INSERT INTO relay_t.rows VALUES ({number}, 'after the restart')")
    end_file, end_pos = coordinate(source)
    source.sql("INSERT INTO relay_t.rows VALUES (99, 'after the end point')")

    files = copy_binlogs(source, start_file, tmp_path / "binlogs")
    assert files[-1].name == end_file and len(files) >= 3  # rotation + restart: 3 files
    gtid_before = applier.sql("SELECT @@gtid_binlog_pos")[0][0]
    result = replay_relay([ReplayRange(files, start_pos, end_pos)], target_of(applier), RELAY)
    assert result.done_bytes == result.total_bytes and result.events > 40

    rows = applier.sql("SELECT id, v FROM relay_t.rows WHERE id < 20 ORDER BY id")
    assert rows == [(1, "a"), (2, "b!"), (10, "x!"), (11, "y!")]
    assert applier.sql("SELECT COUNT(*) FROM relay_t.rows")[0][0] == 24  # not row 99
    source.sql("DELETE FROM relay_t.rows WHERE id = 99")
    assert table_checksum(applier, "relay_t.rows") == table_checksum(source, "relay_t.rows")
    # log_slave_updates: the applier binlogged the replayed transactions with their GTIDs
    assert applier.sql("SELECT @@gtid_binlog_pos")[0][0] != gtid_before
    left_as_found(applier, 7)


def test_relay_fails_fast_with_the_servers_error(
    live_mariadb: MariaDB, applier: MariaDB, tmp_path: Path
) -> None:
    source = live_mariadb
    source.sql("DROP DATABASE IF EXISTS relay_fail")
    applier.sql("DROP DATABASE IF EXISTS relay_fail")
    source.sql("CREATE DATABASE relay_fail")
    source.sql("CREATE TABLE relay_fail.t (id INT PRIMARY KEY)")
    start_file, start_pos = coordinate(source)
    source.sql("INSERT INTO relay_fail.t VALUES (1)")
    source.sql("INSERT INTO relay_fail.t VALUES (2)")
    _end_file, end_pos = coordinate(source)
    applier.sql("CREATE DATABASE relay_fail")
    applier.sql("CREATE TABLE relay_fail.t (id INT PRIMARY KEY)")
    applier.sql("INSERT INTO relay_fail.t VALUES (2)")  # the second replayed INSERT conflicts
    files = copy_binlogs(source, start_file, tmp_path / "binlogs")
    started = time.monotonic()
    with pytest.raises(ReplayFailed, match=r"error 1062 .*Duplicate entry '2'"):
        replay_relay([ReplayRange(files, start_pos, end_pos)], target_of(applier), RELAY)
    assert time.monotonic() - started < 30  # reported, not waited on (a stall takes 60 s)
    assert applier.sql("SELECT id FROM relay_fail.t ORDER BY id") == [(1,), (2,)]
    left_as_found(applier, 7)
    applier.sql("DROP DATABASE relay_fail")


def test_relay_on_a_target_with_the_binlogs_server_id_and_several_ranges(
    live_mariadb: MariaDB, applier: MariaDB, tmp_path: Path
) -> None:
    """The applier skips events carrying its own server_id: a restored copy of the source
    has the source's id, so the replay runs under another one and puts it back. Two ranges
    (as a plan crossing timelines has) are two connection lifetimes."""
    source = live_mariadb
    source.sql("DROP DATABASE IF EXISTS relay_id")
    applier.sql("DROP DATABASE IF EXISTS relay_id")
    start_file, start_pos = coordinate(source)
    source.sql("CREATE DATABASE relay_id")
    source.sql("CREATE TABLE relay_id.t (id INT PRIMARY KEY)")
    source.sql("INSERT INTO relay_id.t VALUES (1)")
    middle_file, middle_pos = coordinate(source)
    source.sql("FLUSH BINARY LOGS")
    source.sql("INSERT INTO relay_id.t VALUES (2)")
    _end_file, end_pos = coordinate(source)
    files = copy_binlogs(source, start_file, tmp_path / "binlogs")
    first = [f for f in files if f.name <= middle_file]
    ranges = [
        ReplayRange(first, start_pos, middle_pos),
        ReplayRange([f for f in files if f.name >= middle_file], middle_pos, end_pos),
    ]
    applier.sql(f"SET GLOBAL server_id = {source.server_id}")
    try:
        replay_relay(ranges, target_of(applier), RELAY)
        assert applier.sql("SELECT id FROM relay_id.t ORDER BY id") == [(1,), (2,)]
        left_as_found(applier, source.server_id)
    finally:
        applier.sql("SET GLOBAL server_id = 7")


def test_auto_chooses_the_pipe_and_says_why(restore_target: MariaDB) -> None:
    """restore_target keeps a binlog without log_slave_updates: relay would lose GTIDs."""
    method = choose("auto", target_of(restore_target), "mariadb")
    assert method.name == "pipe" and "log_slave_updates is OFF" in method.why
    with pytest.raises(RelayUnavailable, match="log_slave_updates"):
        choose("relay", target_of(restore_target), "mariadb")
    assert choose("auto", target_of(restore_target), "mysql").name == "pipe"
