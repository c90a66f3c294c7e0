"""Binlog archiving on the real test bed: byte-identical files through kills, S3 outages,
server restarts, rotation and purges.

Every test compares the files it produced with the server's own files (read as root): closed
files must be identical; the file still being written may differ only in the in-use flag.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pymysql
import pytest

from backupd.binlog import layout
from backupd.binlog.archive import select
from backupd.storage.filestore import FileStore
from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import MotoServer
from tests.testbed.proxy import DelayingProxy

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
IN_USE_FLAG_OFFSET = 4 + 17  # header flags of the format description event at offset 4


def order(name: str) -> tuple[str, int]:
    return layout.file_order(name)


def master(db: MariaDB) -> tuple[str, int]:
    row = db.sql("SHOW MASTER STATUS")[0]
    return str(row[0]), int(row[1])


def binlog_config(base: dict[str, Any], **binlog: Any) -> dict[str, Any]:
    config = dict(base)
    config["binlog"] = {
        "flush_seconds": 0.2,
        "segment_max_bytes": 65536,
        "spool_max_bytes": 4 * 1024 * 1024,
        "heartbeat_seconds": 1.0,
        **binlog,
    }
    return config


def status(sock: str) -> dict[str, Any]:
    _code, doc = backupctl_json("--socket", sock, "binlog", "status")
    return doc


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    """Poll a condition the daemon exposes only through its status (no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def archived_through(sock: str, target: tuple[str, int]) -> bool:
    coordinate = status(sock).get("archived_coordinate") or ""
    if ":" not in coordinate:
        return False
    file, pos = coordinate.rsplit(":", 1)
    return (order(file), int(pos)) >= (order(target[0]), target[1])


def wait_archived(sock: str, db: MariaDB, timeout: float = 90) -> tuple[str, int]:
    target = master(db)
    wait_for(lambda: archived_through(sock, target), f"archive to reach {target}", timeout)
    return target


def fetch(config: Path, dest: Path, first: str) -> dict[str, Any]:
    result = backupctl(
        "--config", str(config), "--json", "binlog", "fetch", "--dest", str(dest), "--from", first
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_identical(
    db: MariaDB, dest: Path, first: str, active: str, crashed: str = ""
) -> list[str]:
    """Every file from `first` to `active` rebuilt exactly; returns the names compared.

    `active` (still written) and `crashed` (the server died writing it, so its in-use flag
    was never cleared on disk) may differ only in the in-use flag."""
    names = sorted(
        (
            p.name
            for p in db.binlog_dir.glob("mysql-bin.[0-9]*")
            if order(first) <= order(p.name) <= order(active)
        ),
        key=order,
    )
    assert names and names[0] == first
    for name in names:
        server: bytes | bytearray = (db.binlog_dir / name).read_bytes()
        rebuilt = (dest / name).read_bytes()
        if name in (active, crashed):
            server = bytearray(server)
            server[IN_USE_FLAG_OFFSET] &= ~0x1  # the only allowed difference
        if name == active:
            server = server[: len(rebuilt)]
            assert len(rebuilt) >= 4
        assert sha(rebuilt) == sha(bytes(server)), f"{name} differs from the server's file"
        check = subprocess.run(
            ["mariadb-binlog", str(dest / name)], capture_output=True, timeout=60, check=False
        )
        assert check.returncode == 0, check.stderr
    return names


def assert_no_overlap(repo: Path, files: list[str]) -> None:
    """Segments of a file join end to start: nothing archived twice, nothing missing."""
    store = FileStore(repo)
    segments = [s for i in store.list("binlog/") if (s := layout.parse_segment(i.key))]
    for file, parts in layout.group_by_file(segments).items():
        if file not in files:
            continue
        parts.sort(key=lambda s: (s.start, s.end))
        position = 0
        for part in parts:
            assert part.start == position, f"{file}: segment at {part.start}, expected {position}"
            position = part.end


class Workload:
    """Transactions in a thread until stopped: multi-row inserts, updates, deletes, DDL."""

    def __init__(self, db: MariaDB, table: str, rate: float = 200, width: int = 300) -> None:
        self.db = db
        self.width = width
        self.table = table
        self.rate = rate
        self.stop = threading.Event()
        self.committed = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Workload:
        self.db.sql(
            f"CREATE TABLE IF NOT EXISTS {self.table} "
            "(id INT AUTO_INCREMENT PRIMARY KEY, v MEDIUMTEXT, n INT)"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        rng = random.Random(4)
        conn: pymysql.connections.Connection[Any] | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.db.connect_root()
                with conn.cursor() as cursor:
                    kind = rng.random()
                    if kind < 0.6:
                        rows = ",".join(
                            f"('{'x' * rng.randint(1, self.width)}', {i})" for i in range(5)
                        )
                        cursor.execute(f"INSERT INTO {self.table} (v, n) VALUES {rows}")
                    elif kind < 0.9:
                        cursor.execute(
                            f"UPDATE {self.table} SET n = n + 1 ORDER BY id DESC LIMIT 3"
                        )
                    else:
                        cursor.execute(f"DELETE FROM {self.table} ORDER BY id LIMIT 1")
                self.committed += 1
            except pymysql.err.MySQLError:
                self.errors += 1
                conn = None
                self.stop.wait(0.2)
            self.stop.wait(1 / self.rate)


@dataclass
class Archive:
    """One test's daemon setup on the session MariaDB: config, socket, its own database."""

    db: MariaDB
    db_name: str
    workdir: Path
    config: dict[str, Any]
    write_config: ConfigFactory
    start: StartDaemon

    @property
    def sock(self) -> str:
        return str(self.config["daemon"]["socket"])

    def begin(self) -> tuple[str, Path]:
        """Rotate so this test's files start fresh, then start a daemon; (first file, config)."""
        self.db.sql("FLUSH BINARY LOGS")
        first, _ = master(self.db)
        config = self.write()
        self.start(config)
        return first, config

    def write(self, config: dict[str, Any] | None = None, name: str = "backupd.toml") -> Path:
        return self.write_config(config or self.config, name)


@pytest.fixture
def arch(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    workdir: Path,
    request: pytest.FixtureRequest,
) -> Archive:
    name = "bl_" + "".join(c if c.isalnum() else "_" for c in request.node.name[5:30])
    live_mariadb.sql(f"CREATE DATABASE IF NOT EXISTS {name}")
    return Archive(
        live_mariadb, name, workdir, binlog_config(base_config), write_config, start_daemon
    )


def test_mixed_workload_rebuilds_byte_identical_files(arch: Archive) -> None:
    db, db_name, workdir = arch.db, arch.db_name, arch.workdir
    first, config = arch.begin()
    sock = arch.sock
    db.sql(f"CREATE TABLE {db_name}.t (id INT AUTO_INCREMENT PRIMARY KEY, v LONGTEXT, n INT)")
    db.sql(
        f"INSERT INTO {db_name}.t (v, n) SELECT CONCAT('row', seq), seq "
        f"FROM {db_name}.seq_1_to_2000"
    )
    db.sql(f"INSERT INTO {db_name}.t (v, n) VALUES (REPEAT('L', 300000), 1)")  # > segment size
    with db.connect_root() as conn, conn.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(f"UPDATE {db_name}.t SET n = n + 1 WHERE n < 100")
        cursor.execute(f"DELETE FROM {db_name}.t WHERE n > 1900")
        cursor.execute("COMMIT")
    db.sql(f"ALTER TABLE {db_name}.t ADD COLUMN w INT")
    db.sql("FLUSH BINARY LOGS")
    db.sql(f"INSERT INTO {db_name}.t (v, n) VALUES ('after rotation', 7)")
    active, _ = wait_archived(sock, db)
    doc = wait_for(lambda: (d := status(sock))["lag_bytes"] == 0 and d, "the lag to be 0")
    assert doc["healthy"] is True
    # the spool drains once every segment is stored and indexed (the index takes idle time)
    doc = wait_for(lambda: (d := status(sock))["spool_bytes"] == 0 and d, "the spool to drain")
    assert doc["index_lag_seconds"] == 0
    assert doc["recovery_point_age_seconds"] < 30

    store = FileStore(workdir / "repo")
    manifest = wait_for(
        lambda: next(store.list(layout.manifest_key(select(store).stream, first)), None),
        "compaction of " + first,
    )
    replaced = json.loads(store.get(manifest.key))["replaced"]
    assert len(replaced) > 3  # the large row forced cuts; now one object holds the file
    fetched = fetch(config, workdir / "rebuilt", first)
    names = assert_identical(db, workdir / "rebuilt", first, active)
    assert len(names) >= 2
    by_name = {f["file"]: f for f in fetched["files"]}
    assert by_name[first]["closed"] is True and by_name[active]["closed"] is False
    assert by_name[first]["segments"] == 1
    text = subprocess.run(
        ["mariadb-binlog", "--base64-output=decode-rows", "-v", str(workdir / "rebuilt" / first)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"ALTER TABLE {db_name}.t ADD COLUMN w INT" in text

    metrics = metrics_text(sock)
    assert "backupd_binlog_archived_bytes_total" in metrics
    assert "backupd_binlog_last_archived_event_timestamp_seconds" in metrics


def metrics_text(sock: str) -> str:
    import urllib.request

    _code, doc = backupctl_json("--socket", sock, "status")
    with urllib.request.urlopen(f"http://{doc['daemon']['metrics_address']}/metrics") as resp:
        return str(resp.read().decode())


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def advanced(sock: str, before: str | None) -> bool:
    return status(sock).get("archived_coordinate") not in (None, before)


def test_sigkill_loop_loses_and_duplicates_nothing(arch: Archive) -> None:
    db, db_name, workdir = arch.db, arch.db_name, arch.workdir
    db.sql("FLUSH BINARY LOGS")
    first, _ = master(db)
    config = arch.write()
    sock = arch.sock
    with Workload(db, f"{db_name}.w", rate=300) as load:
        for kill in range(10):
            daemon = arch.start(config)
            before = status(sock).get("archived_coordinate")
            wait_for(functools.partial(advanced, sock, before), "the archive to advance")
            if kill % 3 == 0:
                db.sql("FLUSH BINARY LOGS")  # rotate while streaming, too
            daemon.signal(signal.SIGKILL)
            assert daemon.process is not None
            daemon.process.wait(30)
        assert load.committed > 0
    db.sql("FLUSH BINARY LOGS")
    arch.start(config)
    active, _ = wait_archived(sock, db)
    fetch(config, workdir / "rebuilt", first)
    names = assert_identical(db, workdir / "rebuilt", first, active)
    assert_no_overlap(workdir / "repo", names)


def test_s3_outage_spools_fills_pauses_then_drains(arch: Archive, moto: MotoServer) -> None:
    """S3 goes away under load: segments wait in the spool; when the (1 MiB) spool is full
    backupd stops reading from the server and alarms; when S3 returns everything drains."""
    db, db_name, workdir = arch.db, arch.db_name, arch.workdir
    bucket = f"bl-outage-{random.randrange(1 << 30)}"
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=bucket)
    proxy = DelayingProxy(moto.port).start()
    try:
        cfg = arch.config
        cfg["binlog"]["spool_max_bytes"] = 1024 * 1024
        cfg["storage"] = {
            "url": f"s3://{bucket}/archive",
            "endpoint_url": proxy.url,
            "region": "us-east-1",
        }
        config = arch.write(cfg)
        db.sql("FLUSH BINARY LOGS")
        first, _ = master(db)
        arch.start(config)
        sock = arch.sock
        with Workload(db, f"{db_name}.o", rate=200, width=2000):
            wait_archived(sock, db)
            proxy.cut()
            outage = wait_for(
                lambda: (d := status(sock))["spool_bytes"] > 0 and d["healthy"] is False and d,
                "the spool to grow",
            )
            assert any("upload failing" in w for w in outage["warnings"])

            def more() -> dict[str, Any] | None:  # on a loaded host: full by the first look
                doc = status(sock)
                return (
                    doc if doc["spool_bytes"] > outage["spool_bytes"] or doc["spool_full"] else None
                )

            grown = wait_for(more, "more segments to spool")
            assert grown["upload_backlog"] > 0
            full = wait_for(lambda: (d := status(sock))["spool_full"] and d, "a full spool")
            assert any("spool full" in w for w in full["warnings"])
            assert full["spool_bytes"] <= 1024 * 1024
            assert metric(metrics_text(sock), "backupd_binlog_spool_full") == 1
            paused = wait_for(
                lambda: (d := status(sock))["lag_bytes"] and d["lag_bytes"] > 100_000 and d,
                "the server to get ahead of the paused reader",
            )
            assert paused["spool_full"] is True
            proxy.restore()
        active, _ = wait_archived(sock, db)
        drained = wait_for(
            lambda: (d := status(sock))["spool_bytes"] == 0 and d["healthy"] and d,
            "the spool to drain",
        )
        assert drained["upload_backlog"] == 0
        assert metric(metrics_text(sock), "backupd_upload_errors_total") > 0
        direct = arch.write(
            {**cfg, "storage": {**cfg["storage"], "endpoint_url": moto.url}}, "direct.toml"
        )
        fetch(direct, workdir / "rebuilt", first)
        assert_identical(db, workdir / "rebuilt", first, active)
    finally:
        proxy.stop()


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_mariadb_restart_or_crash_mid_stream(arch: Archive, how: str) -> None:
    """Stop (or SIGKILL) the server under load and start it again. After a crash the file it
    was writing ends without ROTATE/STOP (and keeps its in-use flag on disk): the archive
    closes it where the server's file ends and goes on with the next one."""
    db, db_name, workdir = arch.db, arch.db_name, arch.workdir
    first, config = arch.begin()
    sock = arch.sock
    with Workload(db, f"{db_name}.{how[0]}", rate=200):
        wait_archived(sock, db)
        interrupted, _ = master(db)
        if how == "crash":
            db.kill()
        else:
            db.stop()
        wait_for(lambda: status(sock)["streaming"] is False, "the stream to notice")
        db.start()
        wait_archived(sock, db)
    db.sql("FLUSH BINARY LOGS")
    active, _ = wait_archived(sock, db)
    assert status(sock)["healthy"] is True
    fetched = fetch(config, workdir / "rebuilt", first)
    by_name = {f["file"]: f for f in fetched["files"]}
    assert by_name[interrupted]["closed"] is True
    assert by_name[interrupted]["size"] == (db.binlog_dir / interrupted).stat().st_size
    crashed = interrupted if how == "crash" else ""
    names = assert_identical(db, workdir / "rebuilt", first, active, crashed)
    assert len(names) >= 3  # before the restart, after it, after the flush
    assert metric(metrics_text(sock), "backupd_binlog_reconnects_total") >= 1


def test_purged_before_archived_records_a_gap(arch: Archive) -> None:
    db, db_name, workdir = arch.db, arch.db_name, arch.workdir
    config = arch.write()
    sock = arch.sock
    daemon = arch.start(config)
    db.sql(f"CREATE TABLE {db_name}.p (id INT PRIMARY KEY)")
    archived_file, _ = wait_archived(sock, db)
    assert daemon.stop() == 0
    for n in range(3):
        db.sql(f"INSERT INTO {db_name}.p VALUES ({n})")
        db.sql("FLUSH BINARY LOGS")
    newest, _ = master(db)
    db.sql(f"PURGE BINARY LOGS TO '{newest}'")
    assert not (db.binlog_dir / archived_file).exists()
    oldest = str(db.sql("SHOW BINARY LOGS")[0][0])  # a file a dump thread holds may stay
    arch.start(config)
    doc = wait_for(lambda: (d := status(sock))["gaps"] and d, "the gap to be reported")
    assert doc["healthy"] is False
    assert any(archived_file in gap for gap in doc["gaps"])
    code, _ = backupctl_json("--socket", sock, "binlog", "status")
    assert code == 4
    gaps = [
        g for i in FileStore(workdir / "repo").list("binlog/") if (g := layout.parse_gap(i.key))
    ]
    assert [(g.from_file, g.to_file) for g in gaps] == [(archived_file, oldest)]
    body = json.loads(FileStore(workdir / "repo").get(gaps[0].key))
    assert body["from_file"] == archived_file and body["to_pos"] == 0 and body["detected_at"]
    assert metric(metrics_text(sock), "backupd_binlog_gaps_total") == 1
    db.sql(f"INSERT INTO {db_name}.p VALUES (99)")
    active, _ = wait_archived(sock, db)  # archiving continues from the oldest file
    fetch(config, workdir / "rebuilt", oldest)
    assert_identical(db, workdir / "rebuilt", oldest, active)
