"""Point-in-time restore on the real test bed: a local-provider snapshot under a writer, the
archive running, instants recorded; drills restore to them by time, GTID and coordinate
(across a rotation, a temporary table spanning files and a server restart) and the table
checksums must equal the recorded ones. Then the refusals: corrupt or deleted objects."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backupd.binlog import layout
from backupd.binlog.archive import select
from backupd.control.client import ControlClient
from backupd.storage.filestore import FileStore
from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, master, wait_archived
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.integration.test_snapshot_schedule import scrape
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
    except json.JSONDecodeError:  # replay: progress lines, then the result on one line
        lines = result.stdout.strip().splitlines()
        doc = json.loads(lines[-1]) if lines else {"stdout": result.stdout}
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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = live_mariadb
    schema = f"pitr_{uuid.uuid4().hex[:8]}"
    config = binlog_config(snap_config)
    config["snapshot"]["retention"] = {
        "keep_last": 1, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0,
    }  # fmt: skip
    daemon_config = write_config(config)
    start_daemon(daemon_config)
    sock = config["daemon"]["socket"]
    db.sql(f"CREATE DATABASE {schema}")
    db.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    writer = Writer(db, f"{schema}.w", interval=0.01).start()
    try:
        writer.wait_for_commits(20)  # the writer is committing while the snapshot runs
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
        assert doc["method"]["name"] == "relay", doc["method"]  # auto: the scratch server's
        assert doc["snapshot"]["set_id"] == record["set_id"]
        assert doc["end"]["gtid_state"] == instant.gtid, (target, doc["end"])
        assert doc["replay"]["server_gtid"] == instant.gtid
        assert mine(doc["tables"], schema) == instant.checksums, target
        assert all(t["check"] == "OK" for t in doc["tables"])
    # the drill removed all it created but the object cache the next command reuses
    assert [p.name for p in (workdir / "drill").iterdir()] == ["objects"]
    failed_drill_cleans_up(fresh, workdir / "failing", monkeypatch)
    local_volumes_and_steps(fresh, workdir / "restored", record)

    storage_only = write_config({"storage": config["storage"]}, "fresh-host.toml")
    replay_latest_into_restored_server(storage_only, fresh, workdir, db, schema)
    code, report = run_json("--config", str(fresh), "--json", "verify")
    assert code == 0 and report["ok"], report
    (window,) = report["windows"].values()
    assert window["earliest"]["set_id"] == record["set_id"]
    assert window["latest"]["time"] >= instants[-1].time
    daemon_runs_a_drill(sock, str(db.sql("SELECT @@gtid_binlog_pos")[0][0]))
    repo = Path(config["storage"]["url"].removeprefix("file://"))
    refusals(storage_only, fresh, repo, instants)
    binlogs_go_with_the_pruned_set(sock, db, repo, record["set_id"], storage_only)


def binlogs_go_with_the_pruned_set(
    sock: str, db: MariaDB, repo: Path, first_set: str, storage_only: Path
) -> None:
    db.sql("FLUSH BINARY LOGS")
    second = take(sock)
    wait_archived(sock, db)
    keep_from = layout.file_order(second["coordinate"].split(":")[0])
    stream = select(FileStore(repo)).stream
    archived = sorted(p.name for p in (repo / "binlog" / stream).iterdir() if p.name != "gaps")
    older = [f"{stream}/{n}" for n in archived if layout.file_order(n) < keep_from]
    assert len(older) >= 3
    code, dry = backupctl_json("--socket", sock, "prune", "--dry-run")
    assert code == 0 and dry["delete"] == [first_set] and dry["binlog_files"] == older, dry
    assert all((repo / "binlog" / name).is_dir() for name in older)  # dry run: nothing went
    code, done = backupctl_json("--socket", sock, "prune")
    assert code == 0 and done["deleted"] == [first_set] and done["binlog_files"] == older, done
    assert not any(  # no object left (an empty index/ directory may stay in file://)
        path.is_file() for name in older for path in (repo / "binlog" / name).rglob("*")
    )
    code, doc = plan(storage_only, "latest")
    assert code == 0 and doc["snapshot"]["set_id"] == second["set_id"], doc


def local_volumes_and_steps(fresh: Path, dest: Path, record: dict[str, Any]) -> None:
    """`restore volumes` (local): image copies plus the steps with this set's paths."""
    code, doc = run_json(
        "--config", str(fresh), "--json", "restore", "volumes", "--to", "latest",
        "--dest", str(dest),
    )  # fmt: skip
    assert code == 0, doc
    (volume,) = doc["volumes"]
    image = Path(volume["image"])
    assert image.parent == dest and image.stat().st_size > 0
    assert doc["set_id"] == record["set_id"]
    steps = "\n".join(doc["steps"])
    assert f"mount -o loop {image} {dest / 'mnt-0'}" in steps
    assert f"{dest / 'mnt-0'}/mysql/binlog/mysql-bin.index" in steps  # the index is remapped
    assert "--event-scheduler=OFF" in steps and "--skip-slave-start" in steps
    image.unlink()


def failed_drill_cleans_up(fresh: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay that fails after the images are mounted and the server runs: all removed."""
    from backupd.config_loader import load_config
    from backupd.restore import apply as applying
    from backupd.restore.drill import drill
    from backupd.restore.replay import ReplayFailed
    from backupd.restore_target import parse_target
    from backupd.storage import open_store

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ReplayFailed("injected failure")

    monkeypatch.setattr(applying, "apply", broken)
    config = load_config(fresh)
    with pytest.raises(ReplayFailed, match="injected"):
        drill(open_store(config.storage), parse_target("latest"),
              config.snapshot.local.directory, workdir)  # fmt: skip
    monkeypatch.undo()
    assert not list(workdir.iterdir())
    mounts = Path("/proc/mounts").read_text()
    assert str(workdir) not in mounts
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(workdir) not in loops


def replay_latest_into_restored_server(
    storage_only: Path, fresh: Path, workdir: Path, db: MariaDB, schema: str
) -> None:
    """`restore replay` (storage section only) into a server started on the restored images."""
    from backupd.config_loader import load_config
    from backupd.restore.drill import materialised, start_scratch
    from backupd.snapshot.catalog import Catalog
    from backupd.storage import open_store

    config = load_config(fresh)
    sets, _ = Catalog(open_store(config.storage)).list()
    record = [s for s in sets if s.state == "completed"][-1]
    expected = checksums(db, schema)
    gtid = str(db.sql("SELECT @@gtid_binlog_pos")[0][0])
    with materialised(record, config.snapshot.local.directory, workdir / "volumes") as mounts:
        scratch = start_scratch(record, mounts, workdir / "srv")
        try:
            code, doc = run_json(
                "--config", str(storage_only), "--json", "restore", "replay", "--to", "latest",
                "--target-socket", scratch.socket, "--target-user", "root",
            )  # fmt: skip
            with scratch.connect() as conn, conn.cursor() as cur:
                cur.execute(f"CHECKSUM TABLE {schema}.t, {schema}.w")
                restored = {f"`{schema}`.`{row[0].split('.')[1]}`": int(row[1]) for row in cur}
        finally:
            scratch.stop()
    assert code == 0, doc
    assert doc["method"]["name"] == "relay", doc["method"]
    assert doc["replay"]["server_gtid"] == gtid and doc["end"]["gtid_state"] == gtid
    assert restored == expected


def daemon_runs_a_drill(sock: str, gtid: str) -> None:
    """POST /v1/drill: the daemon's drill (the scheduled path) passes and is exported."""
    client = ControlClient(sock)
    assert client.request("POST", "/v1/drill")["state"] == "running"
    deadline = time.monotonic() + 120
    status = client.request("GET", "/v1/drill")
    while status["running"] and time.monotonic() < deadline:
        time.sleep(0.2)  # the drill has no event to wait on from here: poll its status
        status = client.request("GET", "/v1/drill")
    last = status["last"]
    assert last["result"] == "success", last
    assert last["end"]["gtid_state"] == gtid and last["replay"]["server_gtid"] == gtid
    samples = scrape(backupctl_json("--socket", sock, "status")[1]["daemon"]["metrics_address"])
    assert samples["backupd_drill_last_success_timestamp_seconds"] >= last["started_at"]
    assert samples['backupd_drills_total{result="success"}'] == 1
    assert 0 < samples["backupd_drill_duration_seconds"] < 120


def plan(config: Path, target: str) -> tuple[int, dict[str, Any]]:
    return run_json("--config", str(config), "--json", "restore", "plan", "--to", target)


def refusals(storage_only: Path, fresh: Path, repo: Path, instants: list[Instant]) -> None:
    """Before the oldest snapshot, not a boundary, a corrupt object, a deleted object."""
    code, doc = plan(storage_only, "2001-01-01T00:00:00Z")
    assert code == 1 and "before the oldest usable snapshot" in doc["error"]["message"]
    file, pos = instants[1].coordinate.rsplit(":", 1)
    code, doc = plan(storage_only, f"{file}:{int(pos) - 1}")
    assert code == 1 and "not a transaction boundary" in doc["error"]["message"], doc
    assert instants[1].coordinate.split(":")[0] in doc["error"]["message"]

    code, doc = plan(storage_only, "latest")
    assert code == 0, doc
    replayed = doc["files"]
    victim = repo / doc["segments"][-1]
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    try:
        code, doc = plan(storage_only, "latest")  # from the copy verified when cached
        assert code == 0, doc
        code, cleared = run_json("--config", str(storage_only), "--json", "restore", "cache",
                                 "--clear")  # fmt: skip
        assert code == 0 and cleared["cleared"]["entries"] > 0 and cleared["entries"] == 0
        code, doc = plan(storage_only, "latest")
        assert code == 1 and victim.name in doc["error"]["message"], doc
        code, report = run_json("--config", str(fresh), "--json", "verify")
        assert code == 4 and any(victim.name in p for p in report["problems"]), report
    finally:
        victim.write_bytes(original)
    assert len(replayed) >= 3
    middle = victim.parent.parent / replayed[1]  # a file between the snapshot's and the newest
    saved = {p: p.read_bytes() for p in middle.iterdir() if p.is_file()}  # not index/
    for path in saved:
        path.unlink()
    try:
        code, doc = plan(storage_only, "latest")
        assert code == 1 and f"{middle.name} is missing" in doc["error"]["message"], doc
        code, report = run_json("--config", str(fresh), "--json", "verify")
        assert code == 4 and any("are missing" in p for p in report["problems"]), report
    finally:
        for path, body in saved.items():
            path.write_bytes(body)
