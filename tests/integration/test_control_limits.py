"""The control socket under abuse, on the real daemon: slow clients are cut at one deadline
per request, readers cannot starve admin requests, and long-polls hold no request slot."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients import (
    backupctl,
    backupctl_json,
    connect_as,
    raw_exchange,
    read_until_closed,
    run_as,
    trickle,
)
from tests.conftest import ConfigFactory
from tests.testbed.daemon import DaemonProcess
from tests.testbed.loopfs import LoopFilesystem

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
NOBODY = (65534, 65534)  # member of `nogroup`, the reader group in these tests
REQUEST_SECONDS = 10.0
READER_SLOTS = 16


def control_config(base_config: dict[str, Any]) -> dict[str, Any]:
    base_config["daemon"].update(
        {
            "socket_group": "nogroup",
            "socket_request_seconds": REQUEST_SECONDS,
            "socket_reader_slots": READER_SLOTS,
            "socket_admin_slots": 4,
        }
    )
    return base_config


def test_admin_status_answers_while_32_slow_readers_are_connected(
    base_config: dict[str, Any], write_config: ConfigFactory, start_daemon: StartDaemon
) -> None:
    sock = control_config(base_config)["daemon"]["socket"]
    start_daemon(write_config(base_config))
    connected_at = time.monotonic()
    loris = connect_as(*NOBODY, sock, 32)
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(loris, stop), daemon=True)
    try:
        for conn in loris:
            conn.sendall(b"GET /v1/sta")
        sender.start()
        code, doc = backupctl_json("--socket", sock, "status")  # as root: admin
        answered_at = time.monotonic()
        assert code in (0, 4) and "daemon" in doc, doc
        assert doc["control"]["reader"]["busy"] == READER_SLOTS
        address = doc["daemon"]["metrics_address"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        assert f'backupd_control_slots_busy{{role="reader"}} {READER_SLOTS}.0' in scraped
        text = backupctl("--socket", sock, "status").stdout
        # the asking request holds one admin slot itself
        assert f"control: admin 1/4 busy, reader {READER_SLOTS}/{READER_SLOTS} busy" in text
        # a reader finds every reader slot taken: a clear 503, not a hang or a bare EOF
        code, out, _err = run_as(*NOBODY, ["--socket", sock, "--json", "status"])
        assert code == 3 and json.loads(out)["error"]["code"] == "control_busy"
        closed = read_until_closed(loris, REQUEST_SECONDS + 30)
    finally:
        stop.set()
        for conn in loris:
            conn.close()
    assert len(closed) == 32, "a slow client was never cut"
    refused = [data for _when, data in closed.values() if data]
    held = [when for when, data in closed.values() if not data]
    assert len(refused) == 32 - READER_SLOTS
    assert all(data.startswith(b"HTTP/1.1 503 ") for data in refused), refused[0][:200]
    assert b'"control_busy"' in refused[0]
    assert len(held) == READER_SLOTS
    # cut at the request deadline, not before (they were still connected when status answered)
    # and not later although each kept sending a byte every half second
    assert all(when > answered_at for when in held)
    assert all(when - connected_at >= REQUEST_SECONDS for when in held)
    assert all(when - connected_at < REQUEST_SECONDS + 20 for when in held)
    # once cut, readers are served again
    code, out, _err = run_as(*NOBODY, ["--socket", sock, "--json", "status"])
    assert code in (0, 4) and "daemon" in json.loads(out)


def send_wait(conn: socket.socket, set_id: str) -> None:
    conn.sendall(
        f"GET /v1/snapshot?set_id={set_id}&wait=3600 HTTP/1.1\r\nHost: backupd\r\n\r\n".encode()
    )


def status_of(sock: str) -> dict[str, Any]:
    answer = raw_exchange(sock, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", timeout=30)
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:300]
    doc: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return doc


def parked(sock: str) -> int:
    control = status_of(sock)["control"]
    return int(control["reader"]["waiting"]) + int(control["admin"]["waiting"])


def poll_until(predicate: Callable[[], bool], attempts: int = 200) -> bool:
    """Ask again until true; each attempt is a full request to the daemon, not a sleep."""
    return any(predicate() for _ in range(attempts))


def test_hour_long_waits_hold_no_request_slot(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    data_fs: LoopFilesystem,
    workdir: Path,
) -> None:
    """40 `wait=3600` long-polls (more than every request slot) park; status still answers."""
    gate = workdir / "gate"
    os.mkfifo(gate)
    config = control_config(base_config)
    config["snapshot"].update(
        {
            "mounts": [str(data_fs.mount_point)],
            "max_freeze_seconds": 55.0,
            # the run stays in progress until the test opens the gate; then it fails cleanly
            "hooks": {
                "pre_freeze": [f"/bin/sh -c 'read x < {gate}; exit 3'"],
                "timeout_seconds": 55,
            },
        }
    )
    sock = config["daemon"]["socket"]
    start_daemon(write_config(config))
    waiters: list[socket.socket] = []
    try:
        code, started = backupctl_json("--socket", sock, "snapshot")
        assert code == 0 and started["state"] == "running", started
        set_id = started["set_id"]
        for count in range(1, 41):  # 20 readers > 16 reader slots, 20 admins > 4 admin slots
            if count <= 20:
                conn = connect_as(*NOBODY, sock, 1)[0]
            else:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(sock)
            waiters.append(conn)
            send_wait(conn, set_id)

            def all_parked(n: int = count) -> bool:
                return parked(sock) >= n

            assert poll_until(all_parked), f"wait {count} never parked"
        control = status_of(sock)["control"]
        assert control["reader"]["waiting"] == 20 and control["admin"]["waiting"] == 20
        assert control["reader"]["busy"] == 0
        code, out, _err = run_as(*NOBODY, ["--socket", sock, "--json", "status"])
        assert code in (0, 4) and "daemon" in json.loads(out)
        code, doc = backupctl_json("--socket", sock, "status")
        assert "daemon" in doc
        with open(gate, "w") as release:
            release.write("go\n")
        answers = read_until_closed(waiters, 60)
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
        data_fs.thaw()  # never frozen here (the hook fails first); thawed whatever happened
        for conn in waiters:
            conn.close()
    assert len(answers) == 40
    for _when, data in answers.values():
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 "), data[:300]
        record = json.loads(body)
        assert record["set_id"] == set_id and record["state"] == "failed"
