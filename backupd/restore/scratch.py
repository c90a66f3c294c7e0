"""A scratch MariaDB/MySQL server on restored data: private socket, no network, no side effects.

Drills and restores start the server on a copy of the data with replication and the event
scheduler off, so the restored copy can never act on the world (no events firing, no
replication connecting out). Binlog index files copied with the data name the ORIGINAL paths;
`remap_binlog_index` points them at the copy before the server opens them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from backupd.errors import BackupdError


class ScratchServerFailed(BackupdError):
    """Scratch server failed: {message}"""

    code = "scratch_server_failed"


def remap_binlog_index(index: Path, old_prefix: str, new_prefix: str) -> int:
    """Rewrite entries under `old_prefix` to `new_prefix`; return how many changed."""
    lines = index.read_text().splitlines()
    out = [
        new_prefix + line[len(old_prefix) :] if line.startswith(old_prefix) else line
        for line in lines
    ]
    index.write_text("".join(f"{line}\n" for line in out))
    return sum(1 for line in lines if line.startswith(old_prefix))


def child_environment() -> dict[str, str]:
    """Our environment without systemd's notify/watchdog/socket variables: a scratch server
    started by the daemon must not report READY/STOPPING to the daemon's supervisor (and
    blocks on it when nobody reads the socket)."""
    prefixes = ("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass
class ScratchServer:
    """mariadbd on `datadir` with its own socket under `workdir`; TCP off unless `port` set."""

    datadir: Path
    workdir: Path
    log_bin: str = ""  # basename for the binlog; empty keeps the server's default (off)
    port: int = 0
    mariadbd: str = "mariadbd"
    extra: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return str(self.workdir / "scratch.sock")

    @property
    def log_file(self) -> Path:
        return self.workdir / "scratch.err"

    def defaults(self) -> str:
        options = {
            "datadir": str(self.datadir),
            "socket": self.socket,
            "pid-file": str(self.workdir / "scratch.pid"),
            "log-error": str(self.log_file),
            "skip-slave-start": "",
            "event-scheduler": "OFF",
            "skip-grant-tables": "",  # private socket only; the data's accounts stay untouched
            "innodb_buffer_pool_size": "128M",
        }
        if self.port:
            options.update({"port": str(self.port), "bind-address": "127.0.0.1"})
        else:
            options["skip-networking"] = ""
        if self.log_bin:
            options.update({"log-bin": self.log_bin, "binlog_format": "ROW", "server_id": "4242"})
        if os.geteuid() == 0:
            options["user"] = "root"
        options.update(self.extra)
        body = "".join(
            f"{key} = {value}\n" if value else f"{key}\n" for key, value in options.items()
        )
        return "[mariadbd]\n" + body

    def start(self, timeout: float = 120) -> ScratchServer:
        binary = shutil.which(self.mariadbd) or shutil.which("mysqld")
        if binary is None:
            raise ScratchServerFailed("no mariadbd or mysqld on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)
        defaults_file = self.workdir / "scratch.cnf"
        defaults_file.write_text(self.defaults())
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--defaults-file={defaults_file}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_environment(),
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise ScratchServerFailed(f"exited {self.process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ScratchServerFailed(f"not ready after {timeout}s: {self._log_tail()}")
            time.sleep(0.1)  # no readiness event to wait on: the socket opening is the signal
        return self

    def _answers(self) -> bool:
        try:
            self.connect().close()
        except pymysql.err.MySQLError:
            return False
        return True

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(unix_socket=self.socket, user="root", autocommit=True, **kwargs)

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
