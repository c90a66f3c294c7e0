"""Point-in-time restore on the real test bed: a local-provider snapshot under a writer, the
archive running, instants recorded; drills restore to them by time, GTID and coordinate
(across a rotation, a temporary table spanning files and a server restart) and the table
checksums must equal the recorded ones. Then the refusals: corrupt or deleted objects."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clients import backupctl
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, master, wait_archived
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB
from tests.testbed.writer import Writer

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]


@dataclass(frozen=True)
class Instant:
    """What the server looked like right after a commit: the proof a restore must match."""

    time: int
    gtid: str
    coordinate: str
    checksums: dict[str, int]


def checksums(db: MariaDB, schema: str) -> dict[str, int]:
    tables = db.sql(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' "
        "AND table_type = 'BASE TABLE'"
    )
    return {
        f"`{schema}`.`{name}`": int(db.sql(f"CHECKSUM TABLE `{schema}`.`{name}`")[0][1])
        for (name,) in tables
    }


def record_instant(db: MariaDB, schema: str) -> Instant:
    """Record, then wait into the next second so no later commit shares this timestamp."""
    gtid = str(db.sql("SELECT @@gtid_binlog_pos")[0][0])
    file, pos = master(db)
    moment = int(time.time())
    instant = Instant(moment, gtid, f"{file}:{pos}", checksums(db, schema))
    time.sleep(max(0.0, moment + 1.05 - time.time()))  # timestamps have 1 s resolution
    return instant


def last_gtid(position: str) -> str:
    return position.split(",", maxsplit=1)[0]


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = backupctl(*args)
    try:
        doc: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        doc = {"stdout": result.stdout}
    doc.setdefault("stderr", result.stderr)
    return result.returncode, doc


def mine(tables: list[dict[str, Any]], schema: str) -> dict[str, int]:
    return {t["table"]: t["checksum"] for t in tables if t["table"].startswith(f"`{schema}`.")}


def test_restore_to_instants_by_time_gtid_and_coordinate(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    workdir: Path,
) -> None:
    db = live_mariadb
    schema = f"pitr_{uuid.uuid4().hex[:8]}"
    config = binlog_config(snap_config)
    daemon_config = write_config(config)
    start_daemon(daemon_config)
    sock = config["daemon"]["socket"]
    db.sql(f"CREATE DATABASE {schema}")
    db.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    writer = Writer(db, f"{schema}.w", interval=0.01).start()
    try:
        time.sleep(0.3)  # the writer is committing while the snapshot runs
        record = take(sock)
    finally:
        writer.stop()
    assert record["state"] == "completed", record
    assert record["server_identity"] == "1" and record["datadir"] and record["log_bin_basename"]

    instants = []
    db.sql(f"INSERT INTO {schema}.t VALUES (1, 'a'), (2, 'b')")
    instants.append(record_instant(db, schema))
    with db.connect_root() as conn, conn.cursor() as cur:
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute(f"CREATE TEMPORARY TABLE {schema}.tmp (id INT, v VARCHAR(64))")
        cur.execute(f"INSERT INTO {schema}.tmp VALUES (10, 'x'), (11, 'y')")
        db.sql("FLUSH BINARY LOGS")  # the temporary table spans two files
        cur.execute(f"INSERT INTO {schema}.t SELECT * FROM {schema}.tmp")
        cur.execute("SET SESSION binlog_format = 'ROW'")
        cur.execute(f"UPDATE {schema}.t SET v = CONCAT(v, '!') WHERE id > 1")
        cur.execute(f"DROP TEMPORARY TABLE {schema}.tmp")
    instants.append(record_instant(db, schema))
    db.stop()
    db.start()  # a restart: the archive goes on in a new file
    db.sql(f"DELETE FROM {schema}.t WHERE id = 1")
    db.sql(f"INSERT INTO {schema}.w (at) VALUES (1)")
    instants.append(record_instant(db, schema))
    db.sql(f"INSERT INTO {schema}.t VALUES (99, 'after every instant')")
    wait_archived(sock, db)

    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")
    targets = [
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instants[0].time)),
        last_gtid(instants[1].gtid),
        instants[2].coordinate,
    ]
    for instant, target in zip(instants, targets, strict=True):
        code, doc = run_json(
            "--config", str(fresh), "--json", "drill", "--to", target,
            "--work-dir", str(workdir / "drill"),
        )  # fmt: skip
        assert code == 0, doc
        assert doc["snapshot"]["set_id"] == record["set_id"]
        assert doc["end"]["gtid_state"] == instant.gtid, (target, doc["end"])
        assert doc["replay"]["server_gtid"] == instant.gtid
        assert mine(doc["tables"], schema) == instant.checksums, target
        assert all(t["check"] == "OK" for t in doc["tables"])
    assert not list((workdir / "drill").iterdir())  # the drill removed all it created
