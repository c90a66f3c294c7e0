"""Snapshots on real parts: the session MariaDB on a loop-mounted ext4, the local provider,
the daemon as a process. The mount is shared with other tests: every test thaws in finally."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.local import restore_image
from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.testbed.daemon import BIN_DIR, DaemonProcess
from tests.testbed.loopfs import LoopFilesystem
from tests.testbed.mariadb import MariaDB
from tests.testbed.util import run
from tests.testbed.writer import Writer

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]


def writable_within(path: Path, timeout: float) -> bool:
    """Write and fsync a file from a SEPARATE process, which may hang while frozen."""
    code = (
        "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o600); "
        "os.write(fd, b'x'); os.fsync(fd); os.close(fd)"
    )
    probe = subprocess.Popen([sys.executable, "-c", code, str(path / ".write-probe")])
    try:
        return probe.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        return False  # it stays blocked until teardown thaws; then it finishes on its own


@pytest.fixture
def thawed(data_fs: LoopFilesystem) -> Iterator[LoopFilesystem]:
    """The shared data filesystem, guaranteed thawed after the test whatever happened."""
    try:
        yield data_fs
    finally:
        data_fs.thaw()


@pytest.fixture
def snap_config(
    base_config: dict[str, Any], thawed: LoopFilesystem, workdir: Path
) -> dict[str, Any]:
    snapshot = base_config["snapshot"]
    snapshot.update(
        {
            "mounts": [str(thawed.mount_point)],
            "lock_timeout_seconds": 2.0,
            "max_freeze_seconds": 20.0,
            "long_query_seconds": 1.0,
        }
    )
    return base_config


def take(sock: str) -> dict[str, Any]:
    _code, record = backupctl_json("--socket", sock, "snapshot", "--wait")
    assert record.get("set_id"), record
    return record


def wait_for_long_query(server: MariaDB, pattern: str, age: float = 1.0) -> None:
    """Until a statement LIKE `pattern` has run `age` seconds (no event exists: poll)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = server.sql(
            "SELECT ID FROM information_schema.PROCESSLIST "
            f"WHERE INFO LIKE '{pattern}' AND TIME >= {age}"
        )
        if rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"no statement like {pattern!r} ran for {age}s")


def gtid_seq(gtid: str) -> int:
    """The sequence number of domain 0 in a MariaDB GTID position (one domain here)."""
    return int(gtid.split(",", maxsplit=1)[0].split("-")[2]) if gtid else 0


def test_snapshot_under_writer_is_point_in_time_and_restorable(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    workdir: Path,
) -> None:
    start_daemon(write_config(snap_config))
    sock = snap_config["daemon"]["socket"]
    table = f"snap_{uuid.uuid4().hex[:8]}.t"
    writer = Writer(live_mariadb, table).start()
    before = gtid_seq(writer.gtid_before)
    try:
        writer.wait_for_commits(50)  # commits before the lock, for the assertions below
        record = take(sock)
    finally:
        commits = writer.stop()
    assert record["state"] == "completed", record
    assert record["consistency"] == "application"
    assert record["coordinate"].startswith("mysql-bin.") and record["gtid"]
    locked, unlocked = record["locked_at"], record["unlocked_at"]
    assert 0 < record["freeze_seconds"] <= record["lock_seconds"]
    # Commits stall only while the lock is held: every slow commit overlaps the lock window.
    slow = [c for c in commits if c.latency > 0.25]
    for commit in slow:
        assert commit.started <= unlocked + 0.05 and commit.ended >= locked - 0.05, commit
    (volume,) = record["volumes"]
    assert volume["method"] in ("reflink", "sparse-copy")

    # The manifest is in the repository, readable without the daemon.
    repo = Path(snap_config["storage"]["url"].removeprefix("file://"))
    manifest = SnapshotSet.from_json((repo / "snapshots" / f"{record['set_id']}.json").read_bytes())
    assert manifest.coordinate == record["coordinate"] and manifest.state == "completed"
    listing = backupctl("--socket", sock, "snapshots")
    assert record["set_id"] in listing.stdout and record["coordinate"] in listing.stdout

    # A server started on a copy of the image holds exactly the commits before the coordinate.
    in_snapshot = gtid_seq(record["gtid"]) - before
    done_before_lock = [c.row_id for c in commits if c.ended < locked]
    started_after_unlock = [c.row_id for c in commits if c.started > unlocked]
    image = workdir / "restored.img"
    directory = snap_config["snapshot"]["local"]["directory"]

    restore_image(directory, VolumeSnapshot(**volume), str(image))
    restored = LoopFilesystem(image, workdir / "restored")
    restored.mount()
    server = None
    try:
        datadir = restored.mount_point / "mysql"
        live_prefix = str(live_mariadb.binlog_dir)
        index = datadir / "binlog" / "mysql-bin.index"
        index.write_text(index.read_text().replace(live_prefix, str(datadir / "binlog")))
        server = MariaDB(workdir / "snapdb", datadir, server_id=1).start()
        rows = [r[0] for r in server.sql(f"SELECT id FROM {table} ORDER BY id")]
        gtid_after_recovery = server.sql("SELECT @@gtid_binlog_pos")[0][0]
    finally:
        if server is not None:
            server.stop()
        restored.unmount()
    assert gtid_after_recovery == record["gtid"]
    assert len(rows) == in_snapshot
    assert rows == list(range(rows[0], rows[0] + len(rows))) if rows else True
    assert set(done_before_lock) <= set(rows)
    assert not set(started_after_unlock) & set(rows)


def test_long_query_skips_the_run_without_stalling_writers(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    thawed: LoopFilesystem,
) -> None:
    start_daemon(write_config(snap_config))
    sock = snap_config["daemon"]["socket"]
    writer = Writer(live_mariadb, f"snap_{uuid.uuid4().hex[:8]}.t").start()
    long_conn = live_mariadb.connect_root()
    holder = subprocess.Popen(
        [
            "mariadb",
            f"--socket={live_mariadb.socket}",
            "-uroot",
            "-e",
            "SELECT SLEEP(30) FROM mysql.user LIMIT 1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_long_query(live_mariadb, "SELECT SLEEP(30)%")
        record = take(sock)
    finally:
        holder.kill()
        holder.wait()
        long_conn.close()
        commits = writer.stop()
    assert record["state"] == "skipped", record
    assert record["error_code"] == "long_query_running"
    assert "SLEEP(30)" in record["error"]
    assert max(c.latency for c in commits) < snap_config["snapshot"]["lock_timeout_seconds"]
    assert writable_within(thawed.mount_point, 10)
    _code, status = backupctl_json("--socket", sock, "status")
    assert status["snapshot"]["last"]["state"] == "skipped"


def test_freeze_refused_for_the_spool_filesystem(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    thawed: LoopFilesystem,
    workdir: Path,
) -> None:
    # A symlink hides the spool's real filesystem from the config check; the run-time
    # check compares devices and still refuses.
    real_spool = thawed.mount_point / f"spool-{uuid.uuid4().hex[:6]}"
    real_spool.mkdir()
    link = workdir / "spool-link"
    link.symlink_to(real_spool)
    snap_config["daemon"]["spool_dir"] = str(link)
    config_path = write_config(snap_config)
    check = run(str(BIN_DIR / "backupd"), "check-config", "--config", str(config_path), check=False)
    assert check.returncode == 78 and "daemon.spool_dir" in check.stderr
    start_daemon(config_path)
    record = take(snap_config["daemon"]["socket"])
    assert record["state"] == "failed"
    assert record["error_code"] == "freeze_refused"
    assert "daemon.spool_dir" in record["error"]
    assert record["locked_at"] == 0  # refused before anything was locked or frozen
    assert writable_within(thawed.mount_point, 10)


def test_runtime_refusals(thawed: LoopFilesystem, workdir: Path) -> None:
    from backupd.snapshot.freezer import refusals

    assert "root filesystem" in refusals(["/"], {})[0]
    inner = thawed.mount_point / "mysql"
    assert any("not a mount point" in p for p in refusals([str(inner)], {}))
    spool = {"daemon.spool_dir": str(thawed.mount_point / "spool" / "not-yet")}
    assert any("daemon.spool_dir" in p for p in refusals([str(thawed.mount_point)], spool))
    assert refusals([str(thawed.mount_point)], {"daemon.state_dir": str(workdir)}) == []


def _freeze_and_hang(mount: str, max_seconds: float, ready: Path) -> None:
    """Child process body: freeze under the watchdog, say so, then hang (to be killed)."""
    from backupd.snapshot.freezer import FrozenMounts

    frozen = FrozenMounts([mount], max_seconds)
    frozen.__enter__()
    ready.write_text("frozen")  # ready lives on another filesystem
    time.sleep(600)


@pytest.mark.parametrize("how", ["sigkill", "max_freeze"])
def test_watchdog_thaws_when_the_freezer_dies_or_hangs(
    thawed: LoopFilesystem, workdir: Path, how: str
) -> None:
    ready = workdir / "ready"
    max_seconds = 60.0 if how == "sigkill" else 2.0
    script = (
        "import sys, pathlib; sys.path.insert(0, sys.argv[4]);"
        "from tests.integration.test_snapshot_local import _freeze_and_hang as f;"
        "f(sys.argv[1], float(sys.argv[2]), pathlib.Path(sys.argv[3]))"
    )
    root = str(Path(__file__).parents[2])
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(thawed.mount_point), str(max_seconds), str(ready), root],
        cwd="/",
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the child's "frozen" file is the event; poll it
        assert ready.exists(), "child never froze"
        assert not writable_within(thawed.mount_point, 0.5), "mount was not frozen"
        if how == "sigkill":
            child.kill()  # the watchdog sees EOF on its pipe and thaws at once
            assert writable_within(thawed.mount_point, 5)
        else:  # the child hangs while frozen; the watchdog's clock thaws it
            assert writable_within(thawed.mount_point, max_seconds + 3)
    finally:
        child.kill()
        child.wait()


def test_kill_selects_clears_a_long_select_then_snapshots(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
) -> None:
    snap_config["snapshot"]["on_long_query"] = "kill-selects"
    start_daemon(write_config(snap_config))
    holder = subprocess.Popen(
        ["mariadb", f"--socket={live_mariadb.socket}", "-uroot", "-e", "SELECT SLEEP(60)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_long_query(live_mariadb, "SELECT SLEEP(60)")
        record = take(snap_config["daemon"]["socket"])
        left = live_mariadb.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(60)'"
        )[0][0]
    finally:
        holder.kill()
        holder.wait()
    assert record["state"] == "completed", record
    assert left == 0  # the read-only statement was killed (KILL QUERY), not waited out


def test_failing_pre_freeze_hook_aborts_before_freezing(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    thawed: LoopFilesystem,
    workdir: Path,
) -> None:
    marker = workdir / "post-thaw-ran"
    snap_config["snapshot"]["hooks"] = {
        "pre_freeze": ["/bin/sh -c 'echo no >&2; exit 3'"],
        "post_thaw": [f"/usr/bin/touch {marker}"],
        "timeout_seconds": 5.0,
    }
    start_daemon(write_config(snap_config))
    record = take(snap_config["daemon"]["socket"])
    assert record["state"] == "failed" and record["error_code"] == "hook_failed"
    assert "exit 3" in record["error"] and record["frozen_at"] == 0
    assert record["volumes"] == [] and not marker.exists()
    assert writable_within(thawed.mount_point, 10)

    snap_config["snapshot"]["hooks"]["pre_freeze"] = ["/bin/true"]
    # A failing post_thaw hook is reported, but the set it follows is good and kept.
    snap_config["snapshot"]["hooks"]["post_thaw"].append("/bin/false")
    snap_config["daemon"]["socket"] = str(workdir / "run2" / "control.sock")
    start_daemon(write_config(snap_config, "hooks-ok.toml"))
    record = take(snap_config["daemon"]["socket"])
    assert record["state"] == "completed" and marker.exists()


def test_thaw_all_is_idempotent(
    snap_config: dict[str, Any], write_config: ConfigFactory, thawed: LoopFilesystem
) -> None:
    config_path = str(write_config(snap_config))
    run("fsfreeze", "--freeze", str(thawed.mount_point))
    first = run(str(BIN_DIR / "backupd"), "thaw-all", "--config", config_path, check=False)
    second = run(str(BIN_DIR / "backupd"), "thaw-all", "--config", config_path, check=False)
    assert first.returncode == 0 and "thawed" in first.stdout, first
    assert second.returncode == 0 and "not frozen" in second.stdout, second
    assert writable_within(thawed.mount_point, 10)


def test_full_snapshot_disk_fails_the_run_and_leaves_no_partial_image(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    thawed: LoopFilesystem,
    workdir: Path,
) -> None:
    small = workdir / "small"
    small.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small))
    try:
        snap_config["snapshot"]["local"]["directory"] = str(small)
        start_daemon(write_config(snap_config))
        record = take(snap_config["daemon"]["socket"])
        leftovers = list(small.iterdir())
    finally:
        run("umount", str(small), check=False)
    assert record["state"] == "failed" and record["error_code"] == "provider_error", record
    assert "No space left" in record["error"]
    assert leftovers == []
    assert writable_within(thawed.mount_point, 10)


def test_dead_database_fails_the_run_without_freezing(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    thawed: LoopFilesystem,
    workdir: Path,
) -> None:
    snap_config["mysql"]["socket"] = str(workdir / "no-such.sock")
    start_daemon(write_config(snap_config))
    record = take(snap_config["daemon"]["socket"])
    assert record["state"] == "failed" and record["error_code"] == "database_unavailable"
    assert record["locked_at"] == 0 and record["frozen_at"] == 0
    assert writable_within(thawed.mount_point, 10)


def test_a_copy_that_cannot_fit_the_budget_is_refused_before_locking(
    snap_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    workdir: Path,
) -> None:
    """No reflink between the data image and the snapshot directory: the estimate at 1 MiB/s
    exceeds the 1 s budget, so the run fails before commits are ever blocked."""
    snap_config["snapshot"]["max_freeze_seconds"] = 1.0
    snap_config["snapshot"]["local"]["copy_bytes_per_second"] = 1024 * 1024
    start_daemon(write_config(snap_config))
    record = take(snap_config["daemon"]["socket"])
    assert record["state"] == "failed" and record["error_code"] == "copy_too_slow", record
    assert "reflink" in record["error"] and "max_freeze_seconds=1.0" in record["error"]
    assert record["locked_at"] == 0 and record["frozen_at"] == 0
    assert not (Path(snap_config["snapshot"]["local"]["directory"]) / record["set_id"]).exists()
