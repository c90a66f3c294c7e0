"""The shipped unit under a real systemd: PID 1 in a container, the .deb installed in it.

Each piece (Type=notify, WatchdogSec, the sandbox, ExecStopPost) is also checked alone
elsewhere; here they run together, the way a host runs them. The container (systemd-nspawn
on a cached Debian rootfs, see tests/testbed/rootfs.py and container.py) gets a loop ext4
at /srv/data holding its own MariaDB's datadir and binlogs: that is the configured mount the
daemon freezes. Teardown thaws it, stops the services, unmounts, detaches the loop device,
powers the container off and detaches anything left on the host.

The unit runs as shipped except for test-only drop-ins (`test.conf`): a 3 s WatchdogSec so the
watchdog test waits seconds instead of a minute, and fake AWS credentials for moto.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.control.client import ControlClient
from tests.integration.test_snapshot_ebs import instance_with_volumes
from tests.testbed.container import Container
from tests.testbed.daemon import render_toml
from tests.testbed.loopfs import MKFS, LoopFilesystem
from tests.testbed.moto import FAKE_CREDENTIALS, MotoServer
from tests.testbed.proxy import DelayingProxy
from tests.testbed.rootfs import cached_rootfs
from tests.testbed.util import run, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.integration

BED = "/srv/bed"  # a host directory bound into the container: image, .deb
MOUNT = "/srv/data"  # the configured mount: the loop ext4 with MariaDB's datadir
DROP_IN = "/etc/systemd/system/backupd.service.d/test.conf"
MARIADB_CNF = f"""[mysqld]
datadir = {MOUNT}/mysql
log_bin = {MOUNT}/mysql/mysql-bin
server_id = 1
binlog_format = ROW
skip_networking = 1
innodb_buffer_pool_size = 32M
"""
GRANTS = ("RELOAD, PROCESS, SELECT, LOCK TABLES, REPLICATION CLIENT, REPLICATION SLAVE, "
          "BINLOG MONITOR, CONNECTION ADMIN, SLAVE MONITOR")  # fmt: skip
PASSWORD = "container-secret"


def base_config() -> dict[str, dict[str, Any]]:
    return {
        "daemon": {"log_level": "debug"},
        "metrics": {"listen": "127.0.0.1:0"},  # the host's network namespace: no fixed port
        "mysql": {"socket": "/run/mysqld/mysqld.sock", "option_file": "/etc/backupd/my.cnf"},
        "storage": {"url": "file:///var/lib/backupd/repository"},
        "snapshot": {
            "enabled": False,
            "provider": "local",
            "mounts": [MOUNT],
            "lock_timeout_seconds": 2.0,
            "local": {"directory": "/var/lib/backupd/images"},
        },
    }


class SystemdBed:
    def __init__(self, container: Container, image: Path) -> None:
        self.container = container
        self.image = image

    def setup(self, deb: Path) -> SystemdBed:
        c = self.container
        device = c.run("losetup", "--find", "--show", f"{BED}/{self.image.name}").stdout.strip()
        c.run("mkdir", "-p", MOUNT)
        c.run("mount", device, MOUNT)
        c.path("/etc/mysql/mariadb.conf.d/99-bed.cnf").write_text(MARIADB_CNF)
        c.run("install", "-d", "-o", "mysql", "-g", "mysql", f"{MOUNT}/mysql")
        c.run("mariadb-install-db", "--user=mysql", "--skip-test-db", "--skip-name-resolve",
              "--auth-root-authentication-method=socket", timeout=180)  # fmt: skip
        c.systemctl("start", "mariadb")
        c.run("mariadb", "-e", f"CREATE USER backupd@localhost IDENTIFIED BY '{PASSWORD}'; "
              f"GRANT {GRANTS} ON *.* TO backupd@localhost")  # fmt: skip
        c.run("dpkg", "-i", f"{BED}/{deb.name}", timeout=300)
        option_file = c.path("/etc/backupd/my.cnf")
        option_file.write_text(f"[client]\nuser = backupd\npassword = {PASSWORD}\n")
        return self

    def restart(self, config: dict[str, dict[str, Any]], drop_in: str = "") -> None:
        """The daemon on `config`, with the test drop-in (or none), started afresh."""
        c = self.container
        c.path("/etc/backupd/backupd.toml").write_text(render_toml(config))
        path = c.path(DROP_IN)
        if drop_in:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"[Service]\n{drop_in}")
        else:
            path.unlink(missing_ok=True)
        c.systemctl("daemon-reload")
        c.systemctl("stop", "backupd")
        c.systemctl("reset-failed", "backupd", check=False)
        c.systemctl("start", "backupd")

    def backupctl(self, *args: str) -> dict[str, Any]:
        done = self.container.run("backupctl", *args, "--json", check=False)
        assert done.stdout.strip(), done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    def writable_within(self, timeout: float) -> bool:
        """Write and fsync from a separate process in the container (it may hang while frozen;
        no pipes, so a hung one holds nothing of ours and finishes after the thaw)."""
        code = (
            "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o600); "
            "os.write(fd, b'x'); os.fsync(fd)"
        )
        argv = ["python3", "-c", code, f"{MOUNT}/.write-probe"]
        probe = subprocess.Popen(
            self.container.command(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            return probe.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            return False

    def teardown(self) -> None:
        """Thaw first, then stop, unmount, detach; each step even if one before failed."""
        c = self.container
        try:
            if c.process is not None and c.process.poll() is None and c.leader:
                c.run("fsfreeze", "--unfreeze", MOUNT, check=False)
                c.systemctl("stop", "backupd", "mariadb", check=False)
                c.run("umount", MOUNT, check=False)
                image = f"{BED}/{self.image.name}"
                for line in c.run("losetup", "-j", image, check=False).stdout.splitlines():
                    c.run("losetup", "-d", line.split(":", 1)[0], check=False)
        finally:
            c.poweroff()  # a hung step above must not leave the container running


@pytest.fixture(scope="module")
def bed(deb_package: Path) -> Iterator[SystemdBed]:
    for tool, package in (("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap")):
        require_tool(tool, package)
    work = Path(tempfile.mkdtemp(prefix="backupd-systemd-"))
    shared = work / "bed"
    shared.mkdir()
    rootfs = cached_rootfs(work / "mmdebstrap.log")
    image = shared / "data.img"
    with open(image, "wb") as handle:
        handle.truncate(256 * 1024 * 1024)
    run(*MKFS["ext4"], str(image))
    shutil.copy(deb_package, shared)
    container = Container(rootfs, work, {shared: BED})
    bed = SystemdBed(container, image)
    try:
        container.boot()
        yield bed.setup(deb_package)
    finally:
        try:
            bed.teardown()
        finally:
            LoopFilesystem(image, work / "not-mounted").destroy()  # detaches what is left
            shutil.rmtree(work, ignore_errors=True)


def test_start_returns_after_ready_and_the_daemon_runs_sandboxed(bed: SystemdBed) -> None:
    """`systemctl start` of a Type=notify unit returns only after READY=1 (NotifyAccess=main)."""
    bed.restart(base_config())
    state = bed.container.show("backupd", "ActiveState", "SubState", "StatusText", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"] == "serving on /run/backupd/control.sock", state
    proc = bed.container.path(f"/proc/{state['MainPID']}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in proc.splitlines() if ":\t" in line)
    uid = bed.container.run("id", "-u", "backupd").stdout.strip()
    assert fields["Uid"].split()[0] == uid
    assert int(fields["CapEff"], 16) == 1 << 21 | 1 << 0  # CAP_SYS_ADMIN, CAP_CHOWN only
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    assert bed.backupctl("status")["daemon"]["pid"] == int(state["MainPID"])

    bed.container.systemctl("stop", "backupd")
    stopped = bed.container.show("backupd", "ActiveState", "Result", "ExecMainStatus")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}


def test_snapshot_freezes_the_configured_mount_under_the_sandbox(bed: SystemdBed) -> None:
    bed.restart(base_config())
    record = bed.backupctl("snapshot", "--wait")
    assert record["state"] == "completed", record
    assert record["consistency"] == "application"
    assert record["frozen_at"] > 0 and record["volumes"][0]["mount"] == MOUNT, record
    assert bed.writable_within(10)


def test_hung_main_loop_is_killed_and_restarted_by_the_watchdog(bed: SystemdBed) -> None:
    bed.restart(base_config(), "WatchdogSec=3s\n")
    before = bed.container.show("backupd", "MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] == "3s" and before["NRestarts"] == "0", before
    bed.container.systemctl("kill", "-s", "SIGSTOP", "--kill-who=main", "backupd")

    def restarted() -> bool:
        now = bed.container.show("backupd", "MainPID", "NRestarts", "ActiveState")
        return now["NRestarts"] == "1" and now["ActiveState"] == "active"

    # 3 s watchdog + SIGABRT + ExecStopPost + RestartSec=5s; no event to await from outside
    wait_until(restarted, 60, "a watchdog restart")
    after = bed.container.show("backupd", "MainPID", "SubState")
    assert after["MainPID"] != before["MainPID"] and after["SubState"] == "running"
    journal = bed.container.journal("backupd")
    assert "Watchdog timeout (limit 3s)!" in journal, journal[-3000:]
    assert "Failed with result 'watchdog'" in journal
    assert bed.backupctl("status")["daemon"]["pid"] > 0


@pytest.fixture
def frozen(bed: SystemdBed, moto: MotoServer) -> Iterator[SystemdBed]:
    """The daemon mid-snapshot with the mount frozen: moto's CreateSnapshots held back 120 s
    behind a proxy, max_freeze_seconds 60 (so a thaw within seconds is not the budget's)."""
    instance = instance_with_volumes(moto.url)
    proxy = DelayingProxy(moto.port, b"CreateSnapshots", delay=120).start()
    config = base_config()
    config["snapshot"].update(provider="ebs", max_freeze_seconds=60.0)
    config["snapshot"]["ebs"] = {
        "region": FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
        "endpoint_url": proxy.url,
        "instance_id": instance["id"],
        "volumes": [instance["data"]],
    }
    credentials = "".join(f"Environment={k}={v}\n" for k, v in FAKE_CREDENTIALS.items())
    try:
        bed.restart(config, credentials)
        assert bed.backupctl("snapshot")["state"] == "running"
        assert proxy.seen.wait(30), "CreateSnapshots never reached the endpoint"
        assert not bed.writable_within(0.5), "the mount was not frozen"
        yield bed
    finally:
        proxy.stop()
        bed.container.run("fsfreeze", "--unfreeze", MOUNT, check=False)


def test_sigkill_of_the_service_while_frozen_is_thawed_by_exec_stop_post(
    frozen: SystemdBed,
) -> None:
    """The whole cgroup (daemon and freeze watchdog) is SIGKILLed mid-freeze: ExecStopPost's
    `backupd thaw-all`, under the same sandbox, thaws the mount; Restart= brings it back.
    systemd signals the cgroup's processes one after the other, so the watchdog sometimes
    sees the daemon's pipe close and thaws first (ExecStopPost then finds it thawed): either
    is a thaw, and the journal must name the one that did it."""
    frozen.container.systemctl("kill", "-s", "KILL", "backupd")
    assert frozen.writable_within(15), "still frozen after SIGKILL of the service"
    wait_until(
        lambda: frozen.container.show("backupd", "NRestarts")["NRestarts"] == "1",
        30, "the restart after ExecStopPost",
    )  # fmt: skip
    journal = frozen.container.journal("backupd")
    by_stop_post = f"{MOUNT}: thawed" in journal
    by_watchdog = "thawed by the freeze watchdog" in journal and f"{MOUNT}: not frozen" in journal
    assert by_stop_post or by_watchdog, journal[-3000:]
    # The lock's session died with the daemon: commits go through.
    frozen.container.run("mariadb", "-e", "CREATE DATABASE IF NOT EXISTS probe", timeout=10)


def test_stop_while_frozen_leaves_the_mount_writable(frozen: SystemdBed) -> None:
    """`systemctl stop` mid-freeze (SIGTERM to every process of the cgroup, as systemd does):
    when it returns the mount is writable and the service stopped within TimeoutStopSec."""
    frozen.container.systemctl("stop", "backupd")
    assert frozen.writable_within(5), "still frozen after systemctl stop"
    state = frozen.container.show("backupd", "ActiveState", "Result")
    assert state["ActiveState"] == "inactive", state
    frozen.container.run("mariadb", "-e", "CREATE DATABASE IF NOT EXISTS probe", timeout=10)


def test_scheduled_drill_runs_under_the_unit(bed: SystemdBed) -> None:
    """A drill started by the daemon (`POST /v1/drill`, as `[drill]` schedules it)."""
    config = base_config()
    config["drill"] = {"enabled": True, "target": "latest"}
    bed.restart(config)
    assert bed.backupctl("snapshot", "--wait")["state"] == "completed"
    client = ControlClient(str(bed.container.path("/run/backupd/control.sock")))
    assert client.request("POST", "/v1/drill")["state"] == "running"
    wait_until(lambda: not client.request("GET", "/v1/drill")["running"], 120, "the drill")
    last = client.request("GET", "/v1/drill")["last"]
    assert last["result"] == "success", last


def test_the_change_index_worker_under_the_unit(bed: SystemdBed) -> None:
    """The worker runs on idle time. Where systemd could apply the unit's LimitNICE=+10, the
    unprivileged daemon lifts it to nice 10 and back (no CAP_SYS_NICE). Where it could not
    (PID 1 without CAP_SYS_RESOURCE, as in some containers, keeps the hard limit at 0), the
    refusal is logged once and the worker indexes on idle time alone."""
    config = base_config()
    config["binlog"] = {"index_flush_seconds": 0.5}  # waited half a second: behind
    bed.restart(config)
    c = bed.container
    main_pid = c.show("backupd", "MainPID")["MainPID"]
    limits = c.path(f"/proc/{main_pid}/limits").read_text()
    assert c.run("systemctl", "show", "backupd", "-p", "LimitNICE").stdout.strip() == "LimitNICE=10"
    may_lift = re.search(r"Max nice priority\s+10\s+10", limits) is not None
    if not may_lift:  # only when PID 1 itself is held at 0 and cannot raise it
        pid1 = c.path("/proc/1/limits").read_text()
        assert re.search(r"Max nice priority\s+0\s+0", pid1), f"{limits}\n{pid1}"

    def worker() -> str:
        found = c.run("pgrep", "-u", "backupd", "-f", "backupd.binlog.index_worker", check=False)
        return found.stdout.strip().split("\n")[0]

    def level() -> bool:
        lag: float = bed.backupctl("binlog", "status")["index_lag_seconds"]
        return lag == 0

    wait_until(lambda: bool(worker()), 60, "the change index worker")
    pid = worker()
    assert "SCHED_IDLE" in c.run("chrt", "-p", pid).stdout
    wait_until(level, 120, "the archive so far to be indexed")

    def logged(text: str) -> bool:
        return text in c.journal("backupd")

    bulk = (
        "CREATE DATABASE IF NOT EXISTS idle; "
        "CREATE OR REPLACE TABLE idle.t (id INT PRIMARY KEY, v VARCHAR(200)); "
        "INSERT INTO idle.t SELECT seq, CONCAT(MD5(seq), MD5(seq + 1)) FROM idle.seq_1_to_100000"
    )
    refused = "cannot change the change index worker's priority"
    c.run("kill", "-STOP", pid)  # its segments wait for sure: the stage tries to lift it
    try:
        c.run("mariadb", "-e", bulk)
        if may_lift:
            wait_until(lambda: logged("worker lifted to nice 10"), 60, "the worker to be lifted")
        else:
            wait_until(lambda: logged(refused), 60, "the refused lift to be logged")
    finally:
        c.run("kill", "-CONT", pid)
    if may_lift:
        wait_until(lambda: logged("worker back to idle time"), 120, "the worker to catch up")
        assert not logged(refused)
    else:
        assert not logged("worker lifted to nice 10")
    wait_until(level, 120, "the index to catch up")
    assert worker() == pid
    assert "SCHED_IDLE" in c.run("chrt", "-p", worker().split()[0]).stdout
