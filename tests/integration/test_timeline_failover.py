"""Failover on the real bed: a restore crosses from the old primary's timeline to the new one.

Two MariaDB servers with GTID replication (`log_slave_updates`, as a failover pair needs).
The daemon archives the primary and takes a local snapshot of it; the replica is promoted
and the daemon pointed at it: timeline 2 begins where the archive ended (the replica's GTID
position contains it). Drills from the snapshot taken before the failover to instants after
it, by time and by GTID, reproduce the checksums recorded on the new primary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backupd.binlog.archive import Archive
from backupd.storage.filestore import FileStore
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import StartDaemon, status, wait_for
from tests.integration.test_restore import mine, record_instant, run_json
from tests.integration.test_snapshot_local import take
from tests.integration.test_timelines import archived_exactly, config_for
from tests.testbed.loopfs import LoopFilesystem
from tests.testbed.mariadb import BACKUPD_PASSWORD, BACKUPD_USER, MariaDB

pytestmark = pytest.mark.integration

CLUSTER = "pair"
REPLICATION = "log_slave_updates = ON\nbinlog_row_image = FULL\n"


@dataclass
class Pair:
    data: LoopFilesystem  # the primary's datadir: what the local provider snapshots
    primary: MariaDB
    replica: MariaDB


@pytest.fixture
def pair(workdir: Path) -> Iterator[Pair]:
    data = LoopFilesystem(workdir / "primary.img", workdir / "primary-data", size_mb=256).create()
    primary = MariaDB(workdir / "p", data.mount_point / "mysql", 11, extra=REPLICATION)
    replica = MariaDB(workdir / "r", workdir / "r" / "data", 12, extra=REPLICATION)
    try:
        primary.install()
        replica.install()
        position = primary.sql("SELECT @@gtid_binlog_pos")[0][0]
        replica.sql(f"SET GLOBAL gtid_slave_pos = '{position}'")  # replicate from now on
        replica.sql(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
            f"MASTER_USER='{BACKUPD_USER}', MASTER_PASSWORD='{BACKUPD_PASSWORD}', "
            "MASTER_USE_GTID=slave_pos"
        )
        replica.sql("START SLAVE")
        yield Pair(data, primary, replica)
    finally:
        data.thaw()
        replica.stop()
        primary.stop()
        data.destroy()


def daemon_config(
    base: dict[str, Any], pair: Pair, server: MariaDB, workdir: Path
) -> dict[str, Any]:
    config = config_for(base, server, CLUSTER)
    config["snapshot"].update(
        mounts=[str(pair.data.mount_point)],
        lock_timeout_seconds=2.0,
        max_freeze_seconds=20.0,
    )
    return config


def caught_up(replica: MariaDB, primary: MariaDB) -> None:
    position = primary.sql("SELECT @@gtid_binlog_pos")[0][0]
    waited = replica.sql(f"SELECT MASTER_GTID_WAIT('{position}', 60)")[0][0]
    assert waited == 0, f"the replica did not reach {position}"


def test_drill_crosses_a_failover(
    pair: Pair,
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    workdir: Path,
) -> None:
    primary, replica = pair.primary, pair.replica
    sock = str(base_config["daemon"]["socket"])
    config = daemon_config(base_config, pair, primary, workdir)
    daemon = start_daemon(write_config(config))
    primary.sql("CREATE DATABASE shop")
    primary.sql("CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    primary.sql("INSERT INTO shop.orders VALUES (1, 'before the snapshot')")
    record = take(sock)
    assert record["state"] == "completed", record
    for n in range(2, 12):
        primary.sql(f"INSERT INTO shop.orders VALUES ({n}, 'on the old primary')")
    wait_for(lambda: archived_exactly(sock, primary, 1), "the old primary's archive")
    caught_up(replica, primary)

    daemon.stop()
    primary.kill()  # the old primary is gone
    replica.sql("STOP SLAVE")
    replica.sql("RESET SLAVE ALL")
    config = daemon_config(base_config, pair, replica, workdir)
    start_daemon(write_config(config, "after-failover.toml"))
    replica.sql("UPDATE shop.orders SET v = 'changed on the new primary' WHERE id < 4")
    replica.sql("INSERT INTO shop.orders VALUES (100, 'on the new primary')")
    by_time = record_instant(replica, "shop")
    replica.sql("FLUSH BINARY LOGS")
    replica.sql("DELETE FROM shop.orders WHERE id BETWEEN 5 AND 7")
    by_gtid = record_instant(replica, "shop")
    replica.sql("INSERT INTO shop.orders VALUES (200, 'after every instant')")
    wait_for(lambda: archived_exactly(sock, replica, 2), "the new primary's archive")

    view = Archive(FileStore(workdir / "repo"), CLUSTER).read()
    history = view.get(2).history
    assert (history.reason, history.parent, history.identity) == ("failover", 1, "12")
    assert history.crossable, history
    assert status(sock)["timeline"] == 2

    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")
    targets = [
        (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(by_time.time)), by_time),
        (by_gtid.gtid.split(",")[0], by_gtid),
    ]
    for target, instant in targets:
        code, doc = run_json(
            "--config", str(fresh), "--json", "drill", "--to", target,
            "--work-dir", str(workdir / "drill"),
        )  # fmt: skip
        assert code == 0, doc
        assert doc["snapshot"]["set_id"] == record["set_id"]  # taken before the failover
        assert [leg["timeline"] for leg in doc["timeline_path"]] == [1, 2], doc["timeline_path"]
        assert doc["method"]["name"] == "relay"  # two ranges, one applier connection each
        assert mine(doc["tables"], "shop") == instant.checksums, (target, doc)
