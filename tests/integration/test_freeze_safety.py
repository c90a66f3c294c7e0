"""Never left frozen, on real parts: the daemon freezes the shared loop mount while an EBS
CreateSnapshots call is held back by a proxy, and then the service is killed the ways systemd
and operators kill it. The mount must come back writable, from the watchdog or from
`thaw-all` (which needs no valid config). Every test thaws in teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backupd.freeze import open_mount
from backupd.snapshot import freezer
from backupd.snapshot.watchdog import EXIT_CLOCK
from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_ebs import ebs_config, instance  # noqa: F401
from tests.integration.test_snapshot_local import writable_within
from tests.testbed.daemon import BIN_DIR, DaemonProcess
from tests.testbed.loopfs import LoopFilesystem
from tests.testbed.moto import MotoServer
from tests.testbed.proxy import DelayingProxy
from tests.testbed.util import run

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its cgroup, for a test daemon), by walking /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def status_field(pid: int, name: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def wait_sigterm_handled(pid: int, timeout: float = 10) -> None:
    """Until SIGTERM is no longer pending for `pid` (delivered: ignored, handled or fatal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = status_field(pid, "SigPnd"), status_field(pid, "ShdPnd")
        state = status_field(pid, "State") or "Z"
        if state.startswith(("Z", "X")) or not any(p and int(p, 16) & SIGTERM_BIT for p in pending):
            return
        time.sleep(0.01)  # no event exists for "signal delivered"; poll /proc
    raise AssertionError(f"SIGTERM still pending for {pid}")


def alive(pid: int) -> bool:
    state = status_field(pid, "State")
    return state is not None and not state.startswith(("Z", "X"))


@pytest.fixture
def held(moto: MotoServer, ebs_config: dict[str, Any]) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The EBS config behind a proxy that holds CreateSnapshots: the run stays frozen."""
    proxy = DelayingProxy(moto.port, b"CreateSnapshots", delay=120).start()
    ebs_config["snapshot"]["ebs"]["endpoint_url"] = proxy.url
    ebs_config["snapshot"]["max_freeze_seconds"] = 30.0
    ebs_config["proxy"] = proxy
    try:
        yield ebs_config
    finally:
        proxy.stop()


@dataclass
class FrozenService:
    daemon: DaemonProcess
    watchdog: int  # pid
    mount: Path
    record: Path  # where the daemon records what it froze

    @property
    def pid(self) -> int:
        assert self.daemon.process is not None
        return self.daemon.process.pid


@pytest.fixture
def frozen_service(
    held: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    data_fs: LoopFilesystem,
) -> FrozenService:
    """A daemon whose run is frozen (CreateSnapshots held back), and its watchdog."""
    proxy = held.pop("proxy")
    daemon = start_daemon(write_config(held))
    code, answer = backupctl_json("--socket", held["daemon"]["socket"], "snapshot")
    assert code == 0 and answer["state"] == "running", answer
    assert proxy.seen.wait(30), "CreateSnapshots never reached the endpoint"
    assert daemon.process is not None
    (watchdog,) = [
        pid
        for pid in descendants(daemon.process.pid)
        if freezer.WATCHDOG_SCRIPT in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    record = Path(held["daemon"]["socket"]).parent / "frozen.json"
    return FrozenService(daemon, watchdog, data_fs.mount_point, record)


def kill_everything(service: FrozenService) -> None:
    """`systemctl kill -s KILL`: the one thing the watchdog does not survive."""
    os.kill(service.watchdog, signal.SIGKILL)
    service.daemon.signal(signal.SIGKILL)
    assert service.daemon.process is not None
    assert service.daemon.process.wait(10) == -signal.SIGKILL
    assert not writable_within(service.mount, 1), "nothing should have thawed yet"


def thaw_all(config_path: Path, runtime_dir: Path) -> subprocess.CompletedProcess[str]:
    """`backupd thaw-all` as ExecStopPost runs it (systemd sets RUNTIME_DIRECTORY)."""
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime_dir)}
    return subprocess.run(
        [str(BIN_DIR / "backupd"), "thaw-all", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_sigterm_to_the_service_then_sigkill_of_the_daemon_thaws(
    frozen_service: FrozenService, workdir: Path
) -> None:
    service = frozen_service
    assert not writable_within(service.mount, 0.5), "the mount was not frozen"
    # The runtime record names the mount before it was frozen.
    assert json.loads(service.record.read_text())["mounts"] == [str(service.mount)]
    assert os.getsid(service.watchdog) != os.getsid(service.pid)  # its own session
    # systemd's stop: SIGTERM (and SIGHUP, SIGINT from operators) to every process.
    for pid in [service.pid, *descendants(service.pid)]:
        os.kill(pid, signal.SIGTERM)
    wait_sigterm_handled(service.watchdog)
    for signum in (signal.SIGHUP, signal.SIGINT):
        os.kill(service.watchdog, signum)
    assert alive(service.watchdog), "the watchdog died of SIGTERM/SIGHUP/SIGINT"
    service.daemon.signal(signal.SIGKILL)
    # max_freeze_seconds is 30: thawing within 5 s means the watchdog saw the pipe close.
    assert writable_within(service.mount, 5)
    assert "thawed by the freeze watchdog" in service.daemon.log()
    # ExecStopPost's thaw-all, with the config broken meanwhile: nothing left frozen, the
    # record is cleared, and it says what it did.
    garbage = workdir / "broken.toml"
    garbage.write_text("this is [not toml\n")
    result = thaw_all(garbage, service.record.parent)
    assert result.returncode == 0, result
    assert f"{service.mount}: not frozen" in result.stdout
    assert not service.record.exists()


def test_thaw_all_with_a_garbage_config_thaws_the_recorded_mount(
    frozen_service: FrozenService, workdir: Path
) -> None:
    service = frozen_service
    kill_everything(service)
    garbage = workdir / "broken.toml"
    garbage.write_text("[snapshot]\nmounts = 42\n\x00garbage")
    result = thaw_all(garbage, service.record.parent)
    assert result.returncode == 0, result
    assert f"{service.mount}: thawed" in result.stdout
    assert "invalid configuration" in result.stderr  # it says why it ignored the config
    assert writable_within(service.mount, 5)
    assert not service.record.exists()


def test_watchdog_reports_a_failed_thaw_as_a_failure(data_fs: LoopFilesystem) -> None:
    """Without CAP_SYS_ADMIN its FITHAW fails with EPERM: that must never read as thawed."""
    run("fsfreeze", "--freeze", str(data_fs.mount_point))
    fd = open_mount(str(data_fs.mount_point))
    control_r, control_w = os.pipe()
    ack_r, ack_w = os.pipe()
    try:
        watchdog = subprocess.Popen(
            [*WITHOUT_SYS_ADMIN, *freezer.WATCHDOG_COMMAND, "0.2", str(control_r), str(ack_w),
             str(fd)],
            pass_fds=(control_r, ack_w, fd),
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        os.close(control_r)
        os.close(ack_w)
        assert os.read(ack_r, 1) == b"R"
        os.write(control_w, b"F")
        assert os.read(ack_r, 1) == b"E"  # not "X": it could not thaw
        _out, err = watchdog.communicate(timeout=10)
        assert watchdog.returncode == 4
        assert "thaw failed" in err and str(data_fs.mount_point) in err
        assert not writable_within(data_fs.mount_point, 0.5)  # still frozen, truly
    finally:
        data_fs.thaw()
        for end in (fd, control_w, ack_r):
            os.close(end)


def test_the_daemon_side_keeps_a_watchdog_thaw_failure(
    data_fs: LoopFilesystem, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FrozenMounts learns of the failure (run -> thaw_failed) though its own thaw works."""
    command = [*WITHOUT_SYS_ADMIN, *freezer.WATCHDOG_COMMAND]
    monkeypatch.setattr(freezer, "WATCHDOG_COMMAND", command)
    record = workdir / "frozen.json"
    frozen = freezer.FrozenMounts([str(data_fs.mount_point)], 0.2, record)
    try:
        with frozen:
            assert frozen.watchdog is not None and record.exists()
            assert frozen.watchdog.process.wait(10) == 4  # it fired and its FITHAW failed
            assert not writable_within(data_fs.mount_point, 0.5)
        assert writable_within(data_fs.mount_point, 5)  # our own thaw (root) worked
    finally:
        frozen.close()
        data_fs.thaw()
    assert frozen.watchdog_fired and frozen.thaw_failed
    assert not frozen.left_frozen and not record.exists()


def test_a_new_daemon_thaws_what_a_killed_one_recorded(
    frozen_service: FrozenService,
    held: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    """Without systemd's ExecStopPost: the next start finds the record and thaws it."""
    service = frozen_service
    kill_everything(service)
    successor = start_daemon(write_config(held, "again.toml"))
    assert writable_within(service.mount, 5)
    assert "a previous run left a freeze record" in successor.log()
    assert not service.record.exists()
    _code, status = backupctl_json("--socket", held["daemon"]["socket"], "status")
    assert not any("frozen" in warning for warning in status["warnings"]), status


def test_status_warns_while_a_record_outlives_its_run(
    base_config: dict[str, Any], write_config: ConfigFactory, start_daemon: StartDaemon
) -> None:
    """A record that cannot be cleared (its mount is gone) is a warning, not silence."""
    record = Path(base_config["daemon"]["socket"]).parent / "frozen.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"mounts": ["/nonexistent/backupd-mount"]}))
    start_daemon(write_config(base_config))
    code, status = backupctl_json("--socket", base_config["daemon"]["socket"], "status")
    assert code == 4, status
    assert any("/nonexistent/backupd-mount may still be frozen" in w for w in status["warnings"])


@pytest.fixture
def second_fs(workdir: Path) -> Iterator[LoopFilesystem]:
    fs = LoopFilesystem(workdir / "second.img", workdir / "second", size_mb=64).create()
    try:
        yield fs
    finally:
        fs.destroy()  # thaws first


def test_the_warm_up_thaws_every_mount_and_arms_the_watchdog(
    data_fs: LoopFilesystem, second_fs: LoopFilesystem
) -> None:
    """Two mounts frozen and thawed at once before the lock: both writable right after, and
    the watchdog's clock runs from there (it fires on it with nothing left frozen), so a
    daemon dying in the warm-up is covered like one dying in the real freeze."""
    frozen = freezer.FrozenMounts([str(data_fs.mount_point), str(second_fs.mount_point)], 6)
    try:
        frozen.warm_up()
        assert writable_within(data_fs.mount_point, 2.5)  # both probes end before the
        assert writable_within(second_fs.mount_point, 2.5)  # watchdog's clock could thaw
        assert frozen.watchdog is not None
        assert frozen.watchdog.process.wait(20) == EXIT_CLOCK
    finally:
        frozen.close()
        data_fs.thaw()
        second_fs.thaw()
    assert frozen.watchdog_fired and not frozen.thaw_failed


def test_a_freeze_after_the_warm_up_still_blocks_writers(data_fs: LoopFilesystem) -> None:
    """The warm-up changes how long the real freeze takes, not what it does."""
    frozen = freezer.FrozenMounts([str(data_fs.mount_point)], 30)
    try:
        frozen.warm_up()
        with frozen:
            assert not writable_within(data_fs.mount_point, 0.5)
        assert writable_within(data_fs.mount_point, 5)
    finally:
        frozen.close()
        data_fs.thaw()
    assert not frozen.watchdog_fired and not frozen.thaw_failed
