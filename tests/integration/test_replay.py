"""Replay real binlogs into a second server in one session, across a rotation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backupd.restore.replay import Progress, ReplayFailed, ReplayRange, ReplayServer, replay
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration


def coordinate(server: MariaDB) -> tuple[str, int]:
    row = server.sql("SHOW MASTER STATUS")[0]
    return str(row[0]), int(row[1])


def table_checksum(server: MariaDB, table: str) -> int:
    return int(server.sql(f"CHECKSUM TABLE {table}")[0][1])


def copy_binlogs(server: MariaDB, first: str, dest: Path) -> list[Path]:
    """The server's binlog files from `first` on, as the restore would rebuild them."""
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in server.binlog_dir.glob("mysql-bin.[0-9]*"))
    return [
        Path(shutil.copy(server.binlog_dir / name, dest / name)) for name in names if name >= first
    ]


def test_replay_across_rotation_with_temporary_table(
    live_mariadb: MariaDB, restore_target: MariaDB, tmp_path: Path
) -> None:
    source = live_mariadb
    source.sql("DROP DATABASE IF EXISTS replay_t")
    restore_target.sql("DROP DATABASE IF EXISTS replay_t")
    start_file, start_pos = coordinate(source)
    with source.connect_root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE replay_t")
        cur.execute("CREATE TABLE replay_t.rows (id INT PRIMARY KEY, v VARCHAR(64))")
        cur.execute("INSERT INTO replay_t.rows VALUES (1,'a'),(2,'b')")
        # statement format so the temporary table itself travels in the binlog
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute("CREATE TEMPORARY TABLE replay_t.scratch (id INT, v VARCHAR(64))")
        cur.execute("INSERT INTO replay_t.scratch VALUES (10,'x'),(11,'y')")
        source.sql("FLUSH BINARY LOGS")  # the temporary table now spans two files
        cur.execute("INSERT INTO replay_t.rows SELECT * FROM replay_t.scratch")
        cur.execute("SET SESSION binlog_format = 'ROW'")
        cur.execute("UPDATE replay_t.rows SET v = CONCAT(v, '!') WHERE id > 1")
    end_file, end_pos = coordinate(source)
    source.sql("INSERT INTO replay_t.rows VALUES (99, 'after the target')")

    files = copy_binlogs(source, start_file, tmp_path / "binlogs")
    assert files[0].name == start_file and files[-1].name == end_file and len(files) >= 2
    seen: list[Progress] = []
    result = replay(
        ReplayRange(files, start_pos, end_pos),
        ReplayServer(socket=restore_target.socket, user="root"),
        on_progress=lambda p: seen.append(
            Progress(p.total_bytes, p.started, p.events, p.done_bytes)
        ),
        progress_interval=0,
    )
    assert result.events > 5 and result.done_bytes == result.total_bytes
    assert seen and seen[-1].done_bytes == result.total_bytes

    rows = restore_target.sql("SELECT id, v FROM replay_t.rows ORDER BY id")
    assert rows == [(1, "a"), (2, "b!"), (10, "x!"), (11, "y!")]
    source.sql("DELETE FROM replay_t.rows WHERE id = 99")
    assert table_checksum(restore_target, "replay_t.rows") == table_checksum(
        source, "replay_t.rows"
    )


def test_replay_failure_reports_the_servers_error(
    live_mariadb: MariaDB, restore_target: MariaDB, tmp_path: Path
) -> None:
    source = live_mariadb
    source.sql("DROP DATABASE IF EXISTS replay_fail")
    start_file, start_pos = coordinate(source)
    source.sql("CREATE DATABASE replay_fail")
    source.sql("CREATE TABLE replay_fail.t (id INT PRIMARY KEY)")
    source.sql("INSERT INTO replay_fail.t VALUES (1)")
    _end_file, end_pos = coordinate(source)
    restore_target.sql("DROP DATABASE IF EXISTS replay_fail")
    restore_target.sql("CREATE DATABASE replay_fail")  # makes the replayed CREATE fail
    files = copy_binlogs(source, start_file, tmp_path / "binlogs")
    with pytest.raises(ReplayFailed, match="database exists"):
        replay(
            ReplayRange(files, start_pos, end_pos),
            ReplayServer(socket=restore_target.socket, user="root"),
        )
    restore_target.sql("DROP DATABASE IF EXISTS replay_fail")
