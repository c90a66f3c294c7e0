"""Ways tests talk to a running daemon: backupctl as a process, raw sockets, another user."""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN_DIR = Path(sys.executable).parent


def backupctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "backupctl"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def backupctl_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = backupctl(*args, "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def raw_exchange(socket_path: str, payload: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are and read until the daemon closes or stops answering."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def become(uid: int, gid: int) -> None:
    """Drop this (forked) process to uid/gid with no supplementary groups."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def in_child_as(uid: int, gid: int, work: Callable[[], Any]) -> Any:
    """Run `work` in a forked child dropped to uid/gid; return its JSON-able result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read)
            become(uid, gid)
            os.write(write, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as out:
        result = json.loads(out.read() or "null")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child as uid {uid} failed")
    return result


def run_as(uid: int, gid: int, argv: list[str]) -> tuple[int, str, str]:
    """Run backupctl's main() in a forked child that dropped to uid/gid (no extra groups).

    Forking reuses this interpreter, so the child needs no read access to the venv.
    """
    from backupd import ctl

    def main() -> list[Any]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = ctl.main(argv)
        return [code, out.getvalue(), err.getvalue()]

    code, stdout, stderr = in_child_as(uid, gid, main)
    return int(code), str(stdout), str(stderr)


def connect_as(uid: int, gid: int, socket_path: str, count: int) -> list[socket.socket]:
    """Open `count` connections whose SO_PEERCRED is uid/gid (a forked child connects them).

    The daemon judges a peer by the credentials at connect time, so the child hands the
    connected sockets back over SCM_RIGHTS and exits; this process then drives them.
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            parent.close()
            become(uid, gid)
            conns = []
            for _ in range(count):
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(socket_path)
                conns.append(conn)
            socket.send_fds(child, [b"x"], [conn.fileno() for conn in conns])
            code = 0
        finally:
            os._exit(code)
    child.close()
    with parent:
        _msg, fds, _flags, _addr = socket.recv_fds(parent, 16, count)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or len(fds) != count:
        raise RuntimeError(f"child could not connect {count} times to {socket_path}")
    return [socket.socket(fileno=fd) for fd in fds]


def trickle(conns: list[socket.socket], stop: threading.Event) -> None:
    """A slow loris: one more header byte on every connection, twice a second."""
    while not stop.wait(0.5):
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(b"X")


def read_until_closed(
    conns: list[socket.socket], limit: float
) -> dict[socket.socket, tuple[float, bytes]]:
    """For each connection: when the daemon closed it (monotonic) and what it sent before."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {}
    for conn in conns:
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
        received[conn] = bytearray()
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    deadline = time.monotonic() + limit
    while len(closed) < len(conns) and time.monotonic() < deadline:
        for key, _events in selector.select(deadline - time.monotonic()):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            try:
                chunk = ready.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[ready] += chunk
                continue
            closed[ready] = (time.monotonic(), bytes(received[ready]))
            selector.unregister(ready)
    selector.close()
    return closed
