"""The daemon on real parts: READY over a notify socket, status from the live MariaDB,
outages, reloads, refusals and garbled requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients import backupctl, backupctl_json, raw_exchange, run_as
from tests.conftest import ConfigFactory
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]


def wait_for_status(
    socket_path: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Ask the daemon to probe now and return the status once `predicate` holds.

    POST /v1/probe runs the probes synchronously, so each answer reflects the world as it is.
    """
    last: dict[str, Any] = {}
    for _ in range(200):
        _code, last = backupctl_json("--socket", socket_path, "probe")
        if predicate(last):
            return last
    raise AssertionError(f"status never matched; last: {last}")


def test_ready_and_status_report_live_mariadb(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
) -> None:
    daemon = start_daemon(write_config(base_config))
    ready = daemon.notify.wait_for("READY", "1")
    assert ready["STATUS"].startswith("serving")
    sock = base_config["daemon"]["socket"]
    status = wait_for_status(sock, lambda doc: doc["database"]["up"])
    version, gtid = live_mariadb.sql("SELECT VERSION(), @@gtid_binlog_pos")[0]
    db = status["database"]
    assert db["flavor"] == "mariadb"
    assert db["version"] == version
    assert db["gtid_position"] == gtid
    assert db["binlog_enabled"] is True and db["binlog_format"] == "ROW"
    assert db["coordinate"].startswith("mysql-bin.")
    assert status["storage"]["up"] is True
    assert status["healthy"] is True

    code, doc = backupctl_json("--socket", sock, "status")
    assert code == 0 and doc["database"]["version"] == version

    curl = subprocess.run(
        ["curl", "-sS", "--unix-socket", sock, "http://backupd/v1/status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(curl.stdout)["database"]["gtid_position"] == gtid

    text = backupctl("--socket", sock, "status")
    assert text.returncode == 0
    assert "mariadb" in text.stdout and "healthy" in text.stdout


def test_metrics_endpoint_serves_build_info_and_health(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    start_daemon(write_config(base_config))
    status = wait_for_status(base_config["daemon"]["socket"], lambda doc: doc["database"]["up"])
    address = status["daemon"]["metrics_address"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        body = response.read().decode()
    assert "backupd_build_info{python=" in body
    assert 'backupd_component_up{component="database"} 1.0' in body
    assert 'backupd_component_up{component="storage"} 1.0' in body


def test_database_down_then_up(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
) -> None:
    daemon = start_daemon(write_config(base_config))
    sock = base_config["daemon"]["socket"]
    wait_for_status(sock, lambda doc: doc["database"]["up"])
    live_mariadb.kill()
    try:
        down = wait_for_status(sock, lambda doc: not doc["database"]["up"])
        assert down["healthy"] is False
        assert any("database unreachable" in w for w in down["warnings"])
        code, _ = backupctl_json("--socket", sock, "status")
        assert code == 4
    finally:
        live_mariadb.start()
    up = wait_for_status(sock, lambda doc: doc["database"]["up"])
    assert up["healthy"] is True
    assert daemon.process is not None and daemon.process.poll() is None


def test_starts_with_database_down(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    workdir: Path,
) -> None:
    base_config["mysql"]["socket"] = str(workdir / "no-such-mysqld.sock")
    start_daemon(write_config(base_config))
    code, doc = backupctl_json("--socket", base_config["daemon"]["socket"], "status")
    assert code == 4
    assert doc["database"]["up"] is False


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (lambda text: text + "\n[binlog]\nflush_secnds = 2\n", "flush_secnds"),
        # snapshots on with no mounts would fail every run: refused as check-config does
        (
            lambda text: text.replace("enabled = false", "enabled = true"),
            "snapshot.mounts = []: snapshot.enabled = true",
        ),
    ],
)
def test_sighup_with_bad_config_keeps_old(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    break_it: Callable[[str], str],
    named: str,
) -> None:
    path = write_config(base_config)
    good = path.read_text()
    daemon = start_daemon(path)
    sock = base_config["daemon"]["socket"]
    loaded_at = wait_for_status(sock, lambda doc: True)["daemon"]["config_loaded_at"]
    path.write_text(break_it(good))
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for("STATUS", "config reload refused; running config kept")
    assert named in daemon.log()
    doc = wait_for_status(sock, lambda doc: doc["database"]["up"])
    assert doc["daemon"]["config_loaded_at"] == loaded_at

    path.write_text(good)
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for("STATUS", "config reloaded")
    assert wait_for_status(sock, lambda doc: True)["daemon"]["config_loaded_at"] > loaded_at


def test_sigterm_stops_cleanly(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(write_config(base_config))
    assert daemon.stop(timeout=15) == 0
    daemon.notify.wait_for("STOPPING", "1", timeout=1)
    assert not Path(base_config["daemon"]["socket"]).exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (
            {"snapshot": {"retention": {"daily": -1}}, "storage": {"endpoint": "http://x:1"}},
            [
                "snapshot.retention.daily = -1: must be greater than or equal to 0",
                'storage.endpoint = "http://x:1": unknown key; did you mean storage.endpoint_url?',
            ],
        ),
        ({"snapshot": {"enabled": True}}, ["snapshot.mounts = []: snapshot.enabled = true"]),
    ],
)
def test_bad_config_exits_78_naming_the_key(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    changes: dict[str, dict[str, Any]],
    named: list[str],
) -> None:
    for section, values in changes.items():
        base_config[section].update(values)
    daemon = start_daemon(write_config(base_config), wait_ready=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 78
    for line in named:
        assert line in daemon.log()


def test_unauthorised_peers_are_refused(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    sock = base_config["daemon"]["socket"]
    start_daemon(write_config(base_config))
    mode = os.stat(sock).st_mode & 0o777
    assert mode == 0o660
    nobody = (65534, 65534)

    # The socket file itself keeps `nobody` out: backupctl says so with exit 5.
    code, _out, err = run_as(*nobody, ["--socket", sock, "status"])
    assert code == 5, err
    assert "permission denied" in err.lower()

    # Even with the file opened up, SO_PEERCRED refuses a peer outside the socket group.
    os.chmod(sock, 0o666)  # noqa: S103 - deliberately opened up
    code, out, err = run_as(*nobody, ["--socket", sock, "--json", "status"])
    assert code == 5, err
    error = json.loads(out)["error"]
    assert error["code"] == "permission_denied"
    assert "uid 65534" in error["message"]  # the daemon's SO_PEERCRED refusal, not the file's


def test_reader_group_may_read_but_not_change(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    base_config["daemon"]["socket_group"] = "nogroup"
    sock = base_config["daemon"]["socket"]
    start_daemon(write_config(base_config))
    code, out, err = run_as(65534, 65534, ["--socket", sock, "--json", "status"])
    assert code in (0, 4), err
    assert "database" in json.loads(out)
    code, out, err = run_as(65534, 65534, ["--socket", sock, "--json", "probe"])
    assert code == 5
    assert "admin group" in json.loads(out)["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\xff garbage\r\n\r\n", b" 400 "),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b" 400 "),
        (b"POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", b" 413 "),
        (b"POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{nope", b" 400 "),
        (b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b" 404 "),
        (b"DELETE /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b" 405 "),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b" 414 "),
    ],
)
def test_garbled_requests_get_errors_and_daemon_survives(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    payload: bytes,
    expected: bytes,
) -> None:
    sock = base_config["daemon"]["socket"]
    daemon = start_daemon(write_config(base_config))
    answer = raw_exchange(sock, payload)
    assert expected in answer.split(b"\r\n", 1)[0], answer[:200]
    if b"Content-Type: application/json" in answer:
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert "error" in json.loads(body)
    _code, doc = backupctl_json("--socket", sock, "status")
    assert "daemon" in doc
    assert daemon.process is not None and daemon.process.poll() is None


def test_slow_client_does_not_block_others(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    import socket as socketlib

    sock = base_config["daemon"]["socket"]
    start_daemon(write_config(base_config))
    stalled = []
    for _ in range(4):  # half the admin slots (root is admin), each sending a partial request
        conn = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        conn.connect(sock)
        conn.sendall(b"GET /v1/sta")
        stalled.append(conn)
    try:
        _code, doc = backupctl_json("--socket", sock, "status")
        assert "daemon" in doc
        # the daemon drops a stalled client after its request timeout (EOF, no answer)
        stalled[0].settimeout(30)
        assert stalled[0].recv(1024) == b""
    finally:
        for conn in stalled:
            conn.close()
