"""`binlog_checksum=NONE` on the real bed: the server's events carry no CRC32 (only its format
descriptions do), yet archiving, `binlog fetch` (byte-identical files) and a drill (table
checksums) must work as with CRC32, and the switch between the two must be seamless."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ConfigFactory
from tests.integration.test_binlog import (
    assert_identical,
    binlog_config,
    fetch,
    master,
    status,
    wait_archived,
)
from tests.integration.test_restore import checksums, mine, run_json
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]


def test_checksum_none_archives_fetches_and_drills(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    workdir: Path,
) -> None:
    db = live_mariadb
    schema = f"nocrc_{uuid.uuid4().hex[:8]}"
    db.sql("SET GLOBAL binlog_checksum = 'NONE'")  # the server rotates: new files have no CRC
    try:
        db.sql("FLUSH BINARY LOGS")
        first, _ = master(db)
        config = binlog_config(snap_config)
        config_path = write_config(config)
        start_daemon(config_path)
        sock = config["daemon"]["socket"]
        db.sql(f"CREATE DATABASE {schema}")
        db.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB")
        rows = f"SELECT seq, REPEAT('a', seq % 200) FROM {schema}.seq_1_to_500"
        db.sql(f"INSERT INTO {schema}.t {rows}")
        record = take(sock)
        assert record["state"] == "completed", record
        db.sql(f"UPDATE {schema}.t SET v = CONCAT(v, 'b') WHERE id % 3 = 0")
        db.sql("FLUSH BINARY LOGS")
        db.sql(f"DELETE FROM {schema}.t WHERE id > 450")
        db.sql(f"ALTER TABLE {schema}.t ADD COLUMN n INT DEFAULT 7")
        wait_archived(sock, db, timeout=30)  # every file so far without CRC32s
        assert not status(sock)["error"]
        db.sql("SET GLOBAL binlog_checksum = 'CRC32'")  # and back: one chain, both kinds
        db.sql(f"INSERT INTO {schema}.t (id, v) VALUES (1000, 'after the switch')")
        active, _ = wait_archived(sock, db)
        state = status(sock)
        assert state["healthy"] and not state["error"], state

        fetch(config_path, workdir / "rebuilt", first)
        names = assert_identical(db, workdir / "rebuilt", first, active)
        assert len(names) >= 3
        code, doc = run_json(
            "--config", str(config_path), "--json", "drill", "--to", "latest",
            "--work-dir", str(workdir / "drill"),
        )  # fmt: skip
        assert code == 0, doc
        assert doc["snapshot"]["set_id"] == record["set_id"]
        assert doc["end"]["transactions"] >= 4
        assert mine(doc["tables"], schema) == checksums(db, schema)
    finally:
        db.sql("SET GLOBAL binlog_checksum = 'CRC32'")
