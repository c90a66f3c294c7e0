"""Fixtures for the real-parts test bed (loop filesystem, MariaDB, moto, the daemon).

Integration tests need root and loop devices. Where those are missing they are skipped with
the reason; with BACKUPD_REQUIRE_INTEGRATION=1 (set by .ci/run) a skip becomes a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.daemon import DaemonProcess, NotifyListener, render_toml
from tests.testbed.loopfs import LoopFilesystem, ReflinkVolume
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import FAKE_CREDENTIALS, MotoServer
from tests.testbed.packages import build_package
from tests.tools import REQUIRE_INTEGRATION, require_tool


def integration_unavailable() -> str:
    if os.geteuid() != 0:
        return "integration tests need root (loop devices, mount, fsfreeze)"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: loop devices unavailable"
    for tool in ("mariadbd", "mariadb-install-db", "mkfs.ext4", "fsfreeze", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install mariadb-server e2fsprogs util-linux)"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = integration_unavailable()
    if not reason:
        return
    for item in items:
        if "integration" in item.keywords:
            if REQUIRE_INTEGRATION:
                item.add_marker(pytest.mark.usefixtures("_integration_required"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def _integration_required() -> None:
    pytest.fail(f"integration test cannot run but CI requires it: {integration_unavailable()}")


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="backupd-test-"))
    base.chmod(0o755)  # the `nobody` client test must reach sockets below it
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def data_fs(scratch: Path) -> Iterator[LoopFilesystem]:
    fs = LoopFilesystem(scratch / "data.img", scratch / "data", size_mb=512).create()
    try:
        yield fs
    finally:
        fs.destroy()  # thaws first


@pytest.fixture(scope="session")
def reflink_volume(scratch: Path) -> Iterator[ReflinkVolume]:
    """Opt-in: an ext4 data image and a snapshot directory on an XFS (reflink=1) loop mount."""
    require_tool("mkfs.xfs", "xfsprogs")
    volume = ReflinkVolume(scratch / "reflink", scratch / "reflink-data", data_mb=256).create()
    try:
        yield volume
    finally:
        volume.destroy()  # thaws the data mount, unmounts it, then the XFS below it


@pytest.fixture(scope="session")
def mariadb(scratch: Path, data_fs: LoopFilesystem) -> Iterator[MariaDB]:
    server = MariaDB(scratch / "mariadb", data_fs.mount_point / "mysql", server_id=1)
    try:
        yield server.install()
    finally:
        data_fs.thaw()
        server.stop()


@pytest.fixture
def live_mariadb(mariadb: MariaDB) -> MariaDB:
    """The session server, started again if an earlier test stopped or killed it."""
    if mariadb.process is None or mariadb.process.poll() is not None:
        mariadb.start()
    return mariadb


@pytest.fixture(scope="session")
def restore_target(scratch: Path) -> Iterator[MariaDB]:
    """A second, empty server on its own port and socket: where restores go."""
    server = MariaDB(scratch / "target", scratch / "target" / "data", server_id=2)
    try:
        yield server.install()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto(scratch: Path) -> Iterator[MotoServer]:
    saved = {key: os.environ.get(key) for key in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    server = MotoServer(scratch / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


ConfigFactory = Callable[..., Path]


@pytest.fixture
def workdir(scratch: Path, request: pytest.FixtureRequest) -> Path:
    """A per-test directory every user can traverse (pytest's tmp_path is 0700 above)."""
    path = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=scratch))
    path.chmod(0o755)
    return path


@pytest.fixture
def base_config(workdir: Path, live_mariadb: MariaDB) -> dict[str, dict[str, Any]]:
    """A config for a daemon on the session MariaDB with a file:// repository."""
    return {
        "daemon": {
            "socket": str(workdir / "run" / "control.sock"),
            "socket_group": "root",
            "state_dir": str(workdir / "state"),
            "spool_dir": str(workdir / "spool"),
            "log_level": "debug",
            "shutdown_timeout_seconds": 10.0,
        },
        "metrics": {"listen": "127.0.0.1:0"},
        "mysql": {
            "socket": live_mariadb.socket,
            "option_file": str(live_mariadb.option_file),
            "reconnect_max_seconds": 1.0,
        },
        "storage": {"url": f"file://{workdir / 'repo'}"},
        "snapshot": {
            "enabled": False,  # no scheduled runs in tests; `backupctl snapshot` still works
            "provider": "local",
            "local": {"directory": str(workdir / "snapshots")},
        },
    }


RESTORE_WORK_DIR = "BACKUPD_RESTORE__WORK_DIR"


@pytest.fixture(autouse=True)
def restore_work_dir(tmp_path: Path) -> Iterator[Path]:
    """Each test's restores and drills get their own object cache, never the host's
    /var/cache/backupd/restore (the environment reaches backupctl and the daemon). Not via
    `monkeypatch`: a test's `monkeypatch.undo()` must not take it away."""
    path = tmp_path / "restore-work"
    saved = os.environ.get(RESTORE_WORK_DIR)
    os.environ[RESTORE_WORK_DIR] = str(path)
    try:
        yield path
    finally:
        if saved is None:
            os.environ.pop(RESTORE_WORK_DIR, None)
        else:
            os.environ[RESTORE_WORK_DIR] = saved


@pytest.fixture
def write_config(workdir: Path) -> ConfigFactory:
    def write(config: dict[str, dict[str, Any]], name: str = "backupd.toml") -> Path:
        path = workdir / name
        path.write_text(render_toml(config))
        return path

    return write


@pytest.fixture
def start_daemon(workdir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []
    listeners: list[NotifyListener] = []

    def start(config_path: Path, **kwargs: Any) -> DaemonProcess:
        notify = NotifyListener(workdir / f"notify-{len(listeners)}.sock")
        listeners.append(notify)
        daemon = DaemonProcess(config_path, workdir / f"daemon-{len(started)}.log", notify)
        started.append(daemon)
        return daemon.start(**kwargs)

    yield start
    for daemon in started:
        daemon.stop()
    for listener in listeners:
        listener.close()


@pytest.fixture(scope="session")
def deb_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb built from this tree once per session (the package test and the container)."""
    require_tool("dpkg-deb", "dpkg")
    return build_package("deb/build.sh", tmp_path_factory.mktemp("deb"))
