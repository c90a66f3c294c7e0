"""The control server in-process: parked long-polls, their limit, and clients that leave."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.control.limits import Limits
from backupd.control.server import ControlServer, LongPoll, Request, Route
from tests.clients import trickle


class Gate:
    """A route whose answer waits for `done` (a long-poll), like `snapshot --wait`."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def wait(self, _request: Request) -> LongPoll:
        return LongPoll(self.done, 3600, self.answer)

    def answer(self) -> tuple[int, dict[str, Any]]:
        return (200, {"state": "done"}) if self.done.is_set() else (202, {"state": "running"})


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def server(tmp_path: Path, gate: Gate) -> Iterator[ControlServer]:
    routes = [
        Route("GET", "/v1/wait", gate.wait),
        Route("GET", "/v1/status", lambda _r: (200, {"ok": True})),
    ]
    control = ControlServer(
        str(tmp_path / "control.sock"),
        routes,
        socket_group="root",
        limits=Limits(request_seconds=30, reader_slots=1, admin_slots=1, max_waits=2),
    )
    control.start()
    try:
        yield control
    finally:
        control.stop()


def send(path: str, target: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    conn.connect(path)
    conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return conn


def answer_of(conn: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.close()
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def waiting(control: ControlServer) -> int:
    return int(control.usage()["admin"]["waiting"])


def until(predicate: Any) -> bool:
    """Re-check a condition the server changes on its own thread (bounded, no sleeps)."""
    event = threading.Event()
    for _ in range(3000):
        if predicate():
            return True
        event.wait(0.01)
    return False


def test_parked_waits_free_their_slot_and_answer_when_done(
    server: ControlServer, gate: Gate
) -> None:
    first = send(server.path, "/v1/wait")
    assert until(lambda: waiting(server) == 1)
    second = send(server.path, "/v1/wait")  # the single admin slot is free again
    assert until(lambda: waiting(server) == 2)
    assert server.usage()["admin"]["busy"] == 0
    assert answer_of(send(server.path, "/v1/status")) == (200, {"ok": True})
    # no parked wait left: answered at once with the state as it is
    assert answer_of(send(server.path, "/v1/wait")) == (202, {"state": "running"})
    gate.done.set()
    assert answer_of(first) == (200, {"state": "done"})
    assert answer_of(second) == (200, {"state": "done"})
    assert waiting(server) == 0


def test_a_client_that_leaves_gives_its_parked_wait_back(server: ControlServer) -> None:
    conn = send(server.path, "/v1/wait")
    assert until(lambda: waiting(server) == 1)
    conn.close()
    assert until(lambda: waiting(server) == 0)


def test_a_trickling_client_is_cut_at_the_request_deadline(tmp_path: Path) -> None:
    control = ControlServer(
        str(tmp_path / "slow.sock"), [], socket_group="root", limits=Limits(request_seconds=1)
    )
    control.start()
    stop = threading.Event()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connected = time.monotonic()
        conn.connect(control.path)
        sender = threading.Thread(target=trickle, args=([conn], stop), daemon=True)
        sender.start()
        conn.settimeout(30)
        try:
            answer = conn.recv(1024)
        except ConnectionResetError:  # closed while a trickled byte was unread: a reset
            answer = b""
        assert answer == b""  # dropped unanswered, although bytes kept coming
        assert time.monotonic() - connected >= 1
        assert until(lambda: control.usage()["admin"]["busy"] == 0)
    finally:
        stop.set()
        conn.close()
        control.stop()
