"""Ways tests talk to a running daemon: backupctl as a process, raw sockets, another user."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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


def run_as(uid: int, gid: int, argv: list[str]) -> tuple[int, str, str]:
    """Run backupctl's main() in a forked child that dropped to uid/gid (no extra groups).

    Forking reuses this interpreter, so the child needs no read access to the venv.
    """
    from backupd import ctl

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdout = os.fdopen(1, "w", closefd=False)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            code = ctl.main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


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
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
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
