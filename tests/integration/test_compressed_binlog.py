"""MariaDB's `log_bin_compress=ON` on the real bed: QUERY_COMPRESSED and the compressed row
events (zlib) through the whole pipeline, not just the archive's bytes.

- find: the daemon indexes compressed row events (row counts per operation) and compressed
  statements (DDL text for `--statement`, statement-format DML inside BEGIN..COMMIT);
- the archiver sees a compressed standalone DDL end its transaction (the archive reaches the
  server's position without waiting for the next transaction);
- drill `--before` (relay) and `--skip` (pipe) around an accident that follows a compressed
  DDL, up to a last transaction that is a compressed DDL; `undo --print` inverts compressed
  row events (applied, it gives back the rows), and refuses a compressed statement-format
  statement with the reason.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients import backupctl
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived, wait_for
from tests.integration.test_find import MIN_ROWS, find, run_workload, s3_config  # noqa: F401
from tests.integration.test_restore import StartDaemon, checksums, mine
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.integration.test_undo_accident import (
    ACCIDENT,
    SCHEMA,
    SETUP,
    Workload,
    ctl,
    load_sql,
    one,
    run,
)
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

COMPRESSED_TYPES = {
    "Query_compressed",
    "Write_rows_compressed_v1",
    "Update_rows_compressed_v1",
    "Delete_rows_compressed_v1",
}


@pytest.fixture
def compressing(live_mariadb: MariaDB) -> Iterator[MariaDB]:
    """The session server with log_bin_compress on (every statement or row image of 10
    bytes or more compressed) in binlog files of their own; put back afterwards, and those
    files purged: a later test's fresh archive starts from the server's oldest file, and
    must not find this test's accidents (test_find) or bytes (test_costs) there."""
    db = live_mariadb
    db.sql("SET GLOBAL log_bin_compress = ON")
    db.sql("SET GLOBAL log_bin_compress_min_len = 10")
    db.sql("FLUSH BINARY LOGS")
    try:
        yield db
    finally:
        db.sql("SET GLOBAL log_bin_compress = OFF")
        db.sql("SET GLOBAL log_bin_compress_min_len = DEFAULT")
        db.sql("FLUSH BINARY LOGS")
        db.sql(f"PURGE BINARY LOGS TO '{db.sql('SHOW MASTER STATUS')[0][0]}'")


def event_types(db: MariaDB, file: str) -> set[str]:
    return {str(row[2]) for row in db.sql(f"SHOW BINLOG EVENTS IN '{file}'")}


def statement_format(db: MariaDB, statement: str) -> str:
    """`statement` in one transaction in statement format (a compressed QUERY between BEGIN
    and COMMIT); its GTID."""
    with db.connect_root() as conn, conn.cursor() as cur:
        cur.execute("SET SESSION binlog_format = STATEMENT")
        cur.execute("BEGIN")
        cur.execute(statement)
        cur.execute("COMMIT")
        cur.execute("SELECT @@last_gtid")
        return str(cur.fetchone()[0])


def test_find_indexes_compressed_events(
    compressing: MariaDB,
    s3_config: tuple[Path, dict[str, Any], str, Any],  # noqa: F811
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    db = compressing
    config, raw_config, _bucket, _s3 = s3_config
    daemon = start_daemon(config)
    sock = str(raw_config["daemon"]["socket"])
    gtid, deleted = run_workload(db, random.Random())
    with db.connect_root() as conn, conn.cursor() as cur:
        updated = cur.execute("UPDATE shop.items SET note = 'bulk' WHERE customer < 10")
        cur.execute("SELECT @@last_gtid")
        update_gtid = str(cur.fetchone()[0])
    stmt_gtid = statement_format(db, "UPDATE shop.customers SET note = 'by-statement' WHERE id = 1")
    ddl_gtid, _ = one(db, "ALTER TABLE shop.items ADD COLUMN compressed_marker INT")
    file = str(db.sql("SHOW MASTER STATUS")[0][0])
    assert event_types(db, file) >= COMPRESSED_TYPES
    wait_archived(sock, db, timeout=30)  # the compressed DDL ends its transaction
    db.sql("FLUSH BINARY LOGS")  # closes the file: its change index is stored now
    wait_archived(sock, db)

    def indexed() -> list[dict[str, Any]] | None:
        result = backupctl("--config", str(config), "--json", "find", "--table", "shop.*")
        return None if "no change index" in result.stderr else json.loads(result.stdout)

    assert wait_for(indexed, "the compressed file's change index", timeout=120)
    daemon.stop()
    assert "not indexed" not in daemon.log_path.read_text()

    found = find(config, "--table", "shop.orders", "--op", "delete", "--min-rows", str(MIN_ROWS))
    assert [(f["gtid"], f["file"], f["rows"], f["kind"]) for f in found] == [
        (gtid, file, deleted, "dml")
    ]
    assert found[0]["tables"] == {"shop.orders": {"insert": 0, "update": 0, "delete": deleted}}
    assert found[0]["statement"].startswith("DELETE FROM shop.orders WHERE customer < 30")
    bulk = find(config, "--table", "shop.items", "--op", "update", "--min-rows", str(updated))
    assert [(f["gtid"], f["tables"]["shop.items"]["update"]) for f in bulk] == [
        (update_gtid, updated)
    ]
    inserts = find(config, "--table", "shop.orders", "--op", "insert", "--limit", "500")
    assert inserts and all(f["tables"]["shop.orders"]["insert"] > 0 for f in inserts)

    ddl = find(config, "--op", "ddl", "--statement", "compressed_marker")
    assert [(f["gtid"], f["kind"], list(f["tables"])) for f in ddl] == [
        (ddl_gtid, "ddl", ["shop.items"])
    ]
    created = find(config, "--op", "ddl", "--statement", "CREATE TABLE shop.orders")
    assert len(created) == 1 and created[0]["tables"] == {
        "shop.orders": {"insert": 0, "update": 0, "delete": 0}
    }
    by_statement = find(config, "--statement", "note = 'by-statement'")
    assert [f["gtid"] for f in by_statement] == [stmt_gtid]


def test_drill_and_undo_around_an_accident_in_compressed_binlogs(
    compressing: MariaDB,
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    restore_target: MariaDB,
    workdir: Path,
) -> None:
    db, reference = compressing, restore_target
    config = binlog_config(snap_config)
    start_daemon(write_config(config))
    sock = config["daemon"]["socket"]
    work = Workload.make(seed=random.randrange(2**32), transactions=60)
    for server in (db, reference):
        run(server, [[s] for s in SETUP])
    assert take(sock)["state"] == "completed"

    audit = f"CREATE TABLE {SCHEMA}.audit (id INT PRIMARY KEY, note VARCHAR(40))"
    for server in (db, reference):
        run(server, work.before)
        one(server, audit)  # a compressed DDL right before the accident
    before = checksums(db, SCHEMA)
    accident, deleted = one(db, ACCIDENT)
    assert deleted >= 15, (work.seed, deleted)
    by_statement: list[str] = []  # the live server's first
    for server in (db, reference):
        run(server, work.after)
        by_statement.append(statement_format(server, f"UPDATE {SCHEMA}.customers SET visits = 1"))
        one(server, f"ALTER TABLE {SCHEMA}.audit ADD COLUMN later INT")  # the last: compressed
    assert event_types(db, str(db.sql("SHOW MASTER STATUS")[0][0])) >= COMPRESSED_TYPES
    wait_archived(sock, db, timeout=30)
    db.sql("FLUSH BINARY LOGS")
    wait_archived(sock, db)
    expected_skip = checksums(reference, SCHEMA)
    assert expected_skip != checksums(db, SCHEMA)

    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")
    base = ("--config", str(fresh), "--json")
    code, doc, _ = ctl(*base, "drill", "--before", accident, "--work-dir", str(workdir / "d1"))
    assert code == 0, (work.seed, doc)
    assert doc["method"]["name"] == "relay", doc["method"]
    assert mine(doc["tables"], SCHEMA) == before, work.seed

    code, doc, _ = ctl(
        *base, "drill", "--to", "latest", "--skip", accident, "--method", "pipe",
        "--work-dir", str(workdir / "d2"),
    )  # fmt: skip
    assert code == 0, (work.seed, doc)
    assert [s["gtid"] for s in doc["skipped"]] == [accident]
    assert mine(doc["tables"], SCHEMA) == expected_skip, work.seed

    result = backupctl(*base[:2], "undo", accident, "--print", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"-- backupd undo preview of transaction {accident}")
    assert result.stdout.count(f"### INSERT INTO `{SCHEMA}`.`orders`") == deleted
    orders = f"`{SCHEMA}`.`orders`"  # nothing after the accident touched its rows: undo it
    load_sql(db.socket, result.stdout)
    assert checksums(db, SCHEMA)[orders] == expected_skip[orders], work.seed
    result = backupctl(*base[:2], "undo", by_statement[0], "--print", timeout=300)
    assert result.returncode == 1, result.stderr
    assert "statement-format statement (UPDATE" in result.stderr, result.stderr
    run(db, [[f"DROP DATABASE IF EXISTS {SCHEMA}"]])
