"""The change index worker: a child process that indexes spooled segments, in order.

Why its own small program rather than a multiprocessing pool: a pool's child starts by
importing the daemon's main module (all of backupd, at normal priority, while the first
burst of archiving runs), and a pool waits at exit for a task that an idle-priority worker
may take long to finish. This child lowers its priority before it imports anything heavy,
lives in its own session (and so its own autogroup, where the kernel has one), exits when
the daemon closes its stdin, and is simply killed when the daemon stops or gives up on it.

Protocol: one JSON line per request on stdin, `{"path": "...", "extent": [file, start, end,
first_time, last_time, first_gtid, last_gtid, kind]}`; one reply per request on stdout,
b"+" or b"-", a 4-byte big-endian length, then the index object (`index_format.encode`) or
the reason the segment could not be indexed (UTF-8).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO

from backupd.binlog.extent import Extent

_REPLY = struct.Struct(">cI")
WORKER_NICE = 10  # the nice value it competes at once lifted (never higher)
_IDLE_AUTOGROUP_NICE = 19  # its autogroup's weight while idle-only (where autogroups apply)


def set_policy(pid: int, idle: bool) -> None:
    """SCHED_IDLE, or SCHED_OTHER at the process's nice value (OSError when refused); the
    autogroup's nice follows where the kernel has autogroups (the worker is alone in its
    session, so it is alone in its autogroup)."""
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    os.sched_setscheduler(pid, policy, os.sched_param(0))
    with contextlib.suppress(OSError):
        nice = _IDLE_AUTOGROUP_NICE if idle else WORKER_NICE
        Path(f"/proc/{pid or 'self'}/autogroup").write_text(str(nice))


def lower(pid: int) -> None:
    """Nice 10, then idle CPU time only: done by the daemon right after the spawn and by the
    child first thing (whichever runs first; both are allowed to lower a priority)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, WORKER_NICE)
    with contextlib.suppress(OSError):
        set_policy(pid, idle=True)


class WorkerGone(Exception):
    """The worker process exited or its pipes broke."""


class IndexFailed(Exception):
    """The worker could not index a segment (its reason is the message)."""


class IndexWorker:
    """The daemon's side: start the child, send a segment, wait for its index."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> int:
        """Spawn the child (OSError when it cannot be); its pid."""
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-m", "backupd.binlog.index_worker"],  # -P: cwd not on path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # own autogroup; the daemon's terminal signals miss it
            close_fds=True,
        )
        lower(self._process.pid)
        return self._process.pid

    def send(self, path: Path, extent: Extent) -> None:
        process = self._alive()
        assert process.stdin is not None
        request = {"path": str(path), "extent": dataclasses.astuple(extent)}
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
        except OSError as exc:
            raise WorkerGone(f"change index worker: {exc}") from exc

    def receive(self, timeout: float) -> bytes | None:
        """The index of the segment sent last; None when `timeout` passed first."""
        process = self._alive()
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        status, size = _REPLY.unpack(_read(process.stdout, _REPLY.size))
        body = _read(process.stdout, size)
        if status != b"+":
            raise IndexFailed(body.decode("utf-8", "replace"))
        return body

    def kill(self) -> None:
        """Stop the child now (a segment half indexed is indexed again by the next one)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    def _alive(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            raise WorkerGone("change index worker is not running")
        return self._process


def _read(pipe: IO[bytes], size: int) -> bytes:
    chunks, missing = [], size
    fd = pipe.fileno()
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            raise WorkerGone("change index worker exited mid-reply")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def main() -> None:
    """In the child: serve requests until stdin closes."""
    lower(0)  # first: the imports below already run on idle time
    from backupd.binlog.change_index import Indexer, IndexObject
    from backupd.binlog.index_format import encode

    indexer = Indexer()  # its state (checksum, table maps, an open transaction) carries on
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        extent = Extent(*request["extent"])
        try:
            txns = indexer.index(extent, Path(request["path"]).read_bytes())
            status, body = b"+", encode(IndexObject(extent.file, extent.start, extent.end, txns))
        except (OSError, ValueError) as exc:  # IndexingError is a ValueError
            status, body = b"-", str(exc).encode()
        out.write(_REPLY.pack(status, len(body)) + body)
        out.flush()


if __name__ == "__main__":
    main()
