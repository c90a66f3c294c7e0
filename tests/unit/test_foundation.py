"""Pure pieces of the foundation: errors, notify protocol, logging, probe backoff, roles."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from backupd.control.peer import Peer, Role, role_of
from backupd.errors import DaemonUnreachable, PermissionDenied, StorageError, from_code
from backupd.health import next_delay
from backupd.log import configure_logging, get_logger
from backupd.sdnotify import Notifier


def test_error_template_and_round_trip() -> None:
    err = DaemonUnreachable(socket="/run/x.sock", reason="refused")
    assert err.message == "Cannot reach backupd at /run/x.sock: refused"
    assert err.exit_code == 3
    rebuilt = from_code("permission_denied", "Permission denied: uid 5")
    assert isinstance(rebuilt, PermissionDenied)
    assert rebuilt.exit_code == 5 and rebuilt.message == "Permission denied: uid 5"
    assert from_code("object_missing", "gone").http_status == 404
    assert type(from_code("no_such_code", "x")).__name__ == "BackupdError"
    assert StorageError("disk full").message == "Storage error: disk full"


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"})
        assert notifier.watchdog_interval == 2.0
        assert notifier.ready("serving")
        message = listener.recv(4096).decode().splitlines()
        assert "READY=1" in message and "STATUS=serving" in message
        assert notifier.watchdog()
        assert listener.recv(4096) == b"WATCHDOG=1"


def test_notifier_without_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog_interval is None


def test_watchdog_ignored_when_meant_for_another_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, 5.0), (1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)]
)
def test_probe_backoff(failures: int, expected: float) -> None:
    assert next_delay(5.0, failures, 60.0) == expected


def test_logs_are_one_line_json_with_priority_and_no_secret() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream, journald=True)
    get_logger("t").warning("hello", password="hunter2", detail="line\nbreak")
    get_logger("t").debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("<4>")
    event = json.loads(lines[0][3:])
    assert event["event"] == "hello" and event["password"] == "***"
    assert "hunter2" not in lines[0]


def test_logfmt_is_default() -> None:
    stream = io.StringIO()
    configure_logging("logfmt", "debug", stream=stream, journald=False)
    get_logger("t").info("ready", socket="/run/x")
    line = stream.getvalue().strip()
    assert line.startswith("ts=") and "level=info" in line and "event=ready" in line


def test_roles() -> None:
    assert role_of(Peer(1, 0, 0), None, None) is Role.ADMIN
    # uid 65534 (nobody) with primary gid 65534: reader when that group reads, else nothing
    assert role_of(Peer(1, 65534, 65534), 65534, None) is Role.READER
    assert role_of(Peer(1, 65534, 65534), 65534, 65534) is Role.ADMIN
    assert role_of(Peer(1, 65534, 65534), 0, None) is Role.NONE


@pytest.mark.parametrize(
    ("version", "variable"),
    [("10.11.19-MariaDB-0+deb12u1-log", "server_id"), ("8.4.3", "server_uuid")],
)
def test_archive_identity_variable_per_flavor(version: str, variable: str) -> None:
    from backupd.database import ServerVersion, identity_variable

    assert identity_variable(ServerVersion.parse(version)) == variable
