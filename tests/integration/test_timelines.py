"""Timelines on the real bed: RESET MASTER mid-stream never mixes two histories.

Before timelines, the archive was keyed by (server, file, offset): after RESET MASTER the
new mysql-bin.000001 was archived under the names the old history already held, the longest
segment won and compaction deleted the new segments. Here the reset starts timeline 2: its
files rebuild byte-identical to the server's, and timeline 1's objects stay intact.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.binlog import layout
from backupd.binlog.archive import Archive, select
from backupd.storage.filestore import FileStore
from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import (
    IN_USE_FLAG_OFFSET,
    StartDaemon,
    arch,  # noqa: F401
    assert_identical,
    binlog_config,
    fetch,
    master,
    metrics_text,
    sha,
    status,
    wait_archived,
    wait_for,
)
from tests.integration.test_binlog import Archive as Arch
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

CLUSTER = "bed"


@pytest.fixture
def own_server(workdir: Path) -> Iterator[MariaDB]:
    """A server of the test's own (RESET MASTER must not disturb the session server)."""
    server = MariaDB(workdir / "own", workdir / "own" / "data", server_id=7)
    try:
        yield server.install()
    finally:
        server.stop()


def config_for(base: dict[str, Any], server: MariaDB) -> dict[str, Any]:
    config = binlog_config(base)
    config["mysql"] = {
        "socket": server.socket,
        "option_file": str(server.option_file),
        "reconnect_max_seconds": 1.0,
    }
    config["storage"] = {**base["storage"], "cluster": CLUSTER}
    return config


def archived_exactly(sock: str, db: MariaDB, timeline: int) -> bool:
    doc = status(sock)
    file, pos = master(db)
    return bool(doc.get("timeline") == timeline and doc["archived_coordinate"] == f"{file}:{pos}")


def write_rows(db: MariaDB, label: str, count: int) -> None:
    db.sql("CREATE DATABASE IF NOT EXISTS tl")
    db.sql("CREATE TABLE IF NOT EXISTS tl.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")
    for n in range(count):
        db.sql(f"INSERT INTO tl.t (v) VALUES ('{label}-{n}')")


def test_reset_master_starts_a_timeline_and_keeps_the_old_one(
    own_server: MariaDB,
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    workdir: Path,
) -> None:
    db = own_server
    config = write_config(config_for(base_config, db))
    sock = str(base_config["daemon"]["socket"])
    start_daemon(config)
    write_rows(db, "old", 20)
    db.sql("FLUSH BINARY LOGS")
    write_rows(db, "old-after-rotation", 20)
    wait_for(lambda: archived_exactly(sock, db, 1), "timeline 1 to be archived")
    abandoned = workdir / "abandoned"
    shutil.copytree(db.binlog_dir, abandoned)  # the history RESET MASTER throws away

    db.sql("RESET MASTER")
    write_rows(db, "new", 30)
    db.sql("FLUSH BINARY LOGS")
    write_rows(db, "new-after-rotation", 5)
    wait_for(lambda: archived_exactly(sock, db, 2), "timeline 2 to be archived")

    store = FileStore(workdir / "repo")
    view = Archive(store, CLUSTER).read()
    assert sorted(view.timelines) == [1, 2]
    second = view.get(2).history
    assert (second.reason, second.parent) == ("reset", 1), second
    assert second.stream == layout.timeline_stream(CLUSTER, 2)
    first_file = "mysql-bin.000001"
    wait_for(
        lambda: next(store.list(layout.manifest_key(second.stream, first_file)), None),
        "compaction of timeline 2's first file",
    )

    fetched = fetch(config, workdir / "rebuilt", first_file)  # the latest timeline by default
    assert fetched["timeline"] == 2
    active, _ = master(db)
    assert_identical(db, workdir / "rebuilt", first_file, active)

    code, old = backupctl_json(
        "--config", str(config), "--json", "binlog", "fetch", "--timeline", "1",
        "--dest", str(workdir / "old"),
    )  # fmt: skip
    assert code == 0, old
    assert [f["file"] for f in old["files"]][:2] == [first_file, "mysql-bin.000002"]
    for entry in old["files"]:
        rebuilt = (workdir / "old" / entry["file"]).read_bytes()
        original = bytearray((abandoned / entry["file"]).read_bytes()[: len(rebuilt)])
        original[IN_USE_FLAG_OFFSET] &= ~0x1  # the file being written when it was copied
        assert sha(rebuilt) == sha(bytes(original)), f"timeline 1's {entry['file']} changed"
    assert select(store, CLUSTER).timeline is not None
    doc = status(sock)
    assert doc["healthy"] is True and doc["cluster"] == CLUSTER, json.dumps(doc)


def test_a_lost_file_in_the_middle_is_found_and_archived_again(arch: Arch) -> None:  # noqa: F811
    """A whole earlier file vanishes from the repository (spool lost before upload, an object
    deleted by hand): the periodic check finds it, reads it again from the server, and the
    rebuilt files equal the server's."""
    arch.config["binlog"]["check_seconds"] = 1.0
    first, config = arch.begin()
    db, sock, workdir = arch.db, arch.sock, arch.workdir
    db.sql(f"CREATE TABLE {arch.db_name}.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)")
    for n in range(30):
        db.sql(f"INSERT INTO {arch.db_name}.t (v) VALUES (REPEAT('x', {100 + n}))")
    db.sql("FLUSH BINARY LOGS")
    db.sql(f"INSERT INTO {arch.db_name}.t (v) VALUES ('after the rotation')")
    active, _ = wait_archived(sock, db)
    store = FileStore(workdir / "repo")
    stream = select(store).stream
    wait_for(lambda: next(store.list(layout.manifest_key(stream, first)), None), "compaction")
    for info in list(store.list(layout.file_prefix(stream, first))):
        store.delete(info.key)  # the whole file is gone from the repository

    wait_for(lambda: "backupd_binlog_refilled_bytes_total" in (m := metrics_text(sock))
             and refilled(m) > 0, "the hole to be re-archived")  # fmt: skip
    wait_for(lambda: status(sock)["healthy"] and not status(sock)["holes"], "a healthy status")
    fetch(config, workdir / "rebuilt", first)
    assert_identical(db, workdir / "rebuilt", first, active)


def refilled(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("backupd_binlog_refilled_bytes_total "):
            return float(line.split()[1])
    return 0.0
