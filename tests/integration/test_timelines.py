"""Timelines on the real bed: RESET MASTER mid-stream never mixes two histories.

Before timelines, the archive was keyed by (server, file, offset): after RESET MASTER the
new mysql-bin.000001 was archived under the names the old history already held, the longest
segment won and compaction deleted the new segments. Here the reset starts timeline 2: its
files rebuild byte-identical to the server's, and timeline 1's objects stay intact.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from tests.integration.test_restore import mine, record_instant, run_json
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.loopfs import LoopFilesystem
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


def config_for(base: dict[str, Any], server: MariaDB, cluster: str = CLUSTER) -> dict[str, Any]:
    config = binlog_config(base)
    config["mysql"] = {
        "socket": server.socket,
        "option_file": str(server.option_file),
        "reconnect_max_seconds": 1.0,
    }
    config["storage"] = {**base["storage"], "cluster": cluster}
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

    def settled() -> bool:
        """Compacted, or stored as one segment (read in one go while the daemon caught up
        with older binlogs: then there is nothing to compact)."""
        keys = [info.key for info in store.list(layout.file_prefix(stream, first))]
        if layout.manifest_key(stream, first) in keys:
            return True
        segments = [seg for key in keys if (seg := layout.parse_segment(key)) is not None]
        found = layout.chain(segments)
        return found is not None and found.closed and len(segments) == 1

    wait_for(settled, "the first file to be stored whole")
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


def test_restored_and_promoted_server_never_restores_the_abandoned_past(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    workdir: Path,
) -> None:
    """Restore to before an accident, put the restored server in service under the same
    server_id, write: the archive's timeline 2 is that history. A restore to an instant on it
    never replays the abandoned one: refused until a set exists on timeline 2, then exact."""
    data, server = loop_server(workdir)
    try:
        config = install_shop(base_config, data, server)
        daemon = start_daemon(write_config(config))
        sock = str(base_config["daemon"]["socket"])
        first_set = take(sock)
        server.sql("INSERT INTO shop.orders VALUES (4, 'good')")
        good = record_instant(server, "shop")
        server.sql("DELETE FROM shop.orders")  # the accident, then the abandoned history
        server.sql("INSERT INTO shop.orders VALUES (66, 'abandoned')")
        wait_for(lambda: archived_exactly(sock, server, 1), "the first history's archive")
        daemon.stop()
        server.stop()
    finally:
        data.thaw()
    storage, fresh = restore_configs(write_config, config)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(good.time))
    try:
        with in_service(workdir, storage, fresh, first_set["set_id"], at) as (promoted, mount):
            with promoted.connect() as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO shop.orders VALUES (5, 'promoted history')")
            after = promoted_checksums(promoted)
            config["mysql"]["socket"] = promoted.socket
            config["snapshot"]["mounts"] = [str(mount)]
            start_daemon(write_config(config, "promoted.toml"))
            wait_for(lambda: status(sock).get("timeline") == 2, "timeline 2")
            wait_for(lambda: archived_scratch(sock, promoted), "the promoted archive")
            view = Archive(FileStore(workdir / "repo"), CLUSTER).read()
            history = view.get(2).history
            # the restored copy's first file is shorter than archived: a rewind, like a
            # crash that lost a tail; either way the branch point is not known exactly
            assert history.reason in ("promotion", "rewind") and not history.crossable

            code, refused = run_json(
                "--config", str(fresh), "--json", "restore", "plan", "--to", "latest",
            )  # fmt: skip
            assert code != 0 and "timeline 2 cannot be crossed" in json.dumps(refused)

            second_set = take(sock)
            assert second_set["timeline"] == 2, second_set
            with promoted.connect() as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO shop.orders VALUES (6, 'after the new set')")
            after = promoted_checksums(promoted)
            wait_for(lambda: archived_scratch(sock, promoted), "the promoted archive")
            code, drilled = run_json(
                "--config", str(fresh), "--json", "drill", "--to", "latest",
                "--work-dir", str(workdir / "drill"),
            )  # fmt: skip
            assert code == 0, json.dumps(drilled)
            assert drilled["snapshot"]["set_id"] == second_set["set_id"]
            assert mine(drilled["tables"], "shop") == after
    finally:
        data.destroy()


def loop_server(workdir: Path) -> tuple[LoopFilesystem, MariaDB]:
    """A server (server_id 7) on a loop filesystem of its own: local snapshots of it can be
    restored and put in service. The caller thaws and destroys `data`."""
    data = LoopFilesystem(workdir / "s.img", workdir / "s-data", size_mb=256).create()
    return data, MariaDB(workdir / "s", data.mount_point / "mysql", server_id=7)


def install_shop(base: dict[str, Any], data: LoopFilesystem, server: MariaDB) -> dict[str, Any]:
    """Installs `server` with shop.orders holding rows 1..3; its daemon config."""
    server.install()
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(64))")
    server.sql("INSERT INTO shop.orders VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    config = config_for(base, server)
    config["snapshot"].update(mounts=[str(data.mount_point)], max_freeze_seconds=20.0)
    return config


def restore_configs(write_config: ConfigFactory, config: dict[str, Any]) -> tuple[Path, Path]:
    """(storage only: what `restore replay` needs, storage and snapshot: for drills)."""
    storage = write_config({"storage": config["storage"]}, "storage.toml")
    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")
    return storage, fresh


@contextmanager
def in_service(
    workdir: Path, storage: Path, fresh: Path, set_id: str, target: str
) -> Iterator[tuple[Any, Path]]:
    """Set `set_id` restored and replayed to `target` in a scratch server that then takes
    over under the same server_id 7: yields it and its data mount; stops it afterwards."""
    from backupd.config_loader import load_config
    from backupd.restore.drill import materialised, start_scratch
    from backupd.snapshot.catalog import Catalog

    record = Catalog(FileStore(workdir / "repo")).get(set_id)
    directory = load_config(fresh).snapshot.local.directory
    with materialised(record, directory, workdir / "restored") as mounts:
        promoted = start_scratch(record, mounts, workdir / "srv")
        try:
            code, doc = run_json(
                "--config", str(storage), "--json", "restore", "replay", "--to", target,
                "--target-socket", promoted.socket, "--target-user", "root",
            )  # fmt: skip
            assert code == 0, doc
            with promoted.connect() as conn, conn.cursor() as cur:
                cur.execute("SET GLOBAL server_id = 7")  # in service under the same id
            yield promoted, next(iter(mounts.values()))
        finally:
            promoted.stop()


def promoted_checksums(server: Any) -> dict[str, int]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE shop.orders")
        return {"`shop`.`orders`": int(cur.fetchone()[1])}


def archived_scratch(sock: str, server: Any) -> bool:
    """The archive holds everything the (scratch) server has written, on timeline 2."""
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    doc = status(sock)
    return bool(doc.get("timeline") == 2 and doc["archived_coordinate"] == f"{file}:{pos}")


def test_time_targets_with_timestamps_going_backwards_are_exact_or_refused(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    workdir: Path,
) -> None:
    """SET TIMESTAMP back an hour across a rotation: a time target is the truth or refused."""
    db = live_mariadb
    config = binlog_config(snap_config)
    start_daemon(write_config(config))
    sock = config["daemon"]["socket"]
    db.sql("CREATE DATABASE IF NOT EXISTS stamps")
    db.sql("CREATE TABLE stamps.t (id INT PRIMARY KEY, v VARCHAR(32))")
    take(sock)
    db.sql("INSERT INTO stamps.t VALUES (1, 'honest')")
    honest = record_instant(db, "stamps")
    with db.connect_root() as conn, conn.cursor() as cur:
        cur.execute(f"SET TIMESTAMP = {honest.time - 3600}")
        cur.execute("INSERT INTO stamps.t VALUES (2, 'stamped an hour early')")
        db.sql("FLUSH BINARY LOGS")
        cur.execute("INSERT INTO stamps.t VALUES (3, 'early, in the next file')")
        cur.execute("SET TIMESTAMP = DEFAULT")
    db.sql("INSERT INTO stamps.t VALUES (4, 'honest again')")
    later = record_instant(db, "stamps")
    wait_archived(sock, db)
    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")

    def at(instant: Any) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant.time))

    code, refused = run_json(
        "--config", str(fresh), "--json", "restore", "plan", "--to", at(honest)
    )
    assert code != 0 and "go backwards" in json.dumps(refused), refused
    code, doc = run_json(
        "--config", str(fresh), "--json", "drill", "--to", at(later),
        "--work-dir", str(workdir / "drill"),
    )  # fmt: skip
    assert code == 0, json.dumps(doc)
    assert mine(doc["tables"], "stamps") == later.checksums


def test_an_archive_from_before_timelines_is_adopted_and_continued(
    own_server: MariaDB,
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    workdir: Path,
) -> None:
    """The previous layout (`binlog/<server_id>/<file>/...`, no history object) becomes
    timeline 1 of the cluster on the first start: nothing copied, nothing re-archived, and
    the files rebuild byte-identical across the old and the new objects."""
    db = own_server
    config = write_config(config_for(base_config, db))
    sock = str(base_config["daemon"]["socket"])
    daemon = start_daemon(config)
    write_rows(db, "before", 10)
    wait_for(lambda: archived_exactly(sock, db, 1), "the first archive")
    daemon.stop()
    repo = workdir / "repo"  # rewrite it as the layout before timelines wrote it
    (repo / "binlog" / CLUSTER / "tl000001").rename(repo / "binlog" / "7")
    shutil.rmtree(repo / "binlog" / CLUSTER)
    legacy = sorted(p.name for p in (repo / "binlog" / "7").iterdir())

    start_daemon(write_config(config_for(base_config, db), "again.toml"))
    db.sql("FLUSH BINARY LOGS")
    write_rows(db, "after", 10)
    wait_for(lambda: archived_exactly(sock, db, 1), "the adopted archive to continue")
    history = Archive(FileStore(repo), CLUSTER).read().get(1).history
    assert (history.reason, history.stream) == ("migration", "7"), history
    assert not (repo / "binlog" / CLUSTER / "tl000001").exists()  # written on under binlog/7
    assert set(legacy) <= {p.name for p in (repo / "binlog" / "7").iterdir()}
    fetch(config, workdir / "rebuilt", "mysql-bin.000001")
    active, _ = master(db)
    assert_identical(db, workdir / "rebuilt", "mysql-bin.000001", active)
