"""A throwaway MariaDB server with the binary log on, started from Debian's mariadb-server.

install-db runs once per data directory; start/stop/kill act on the server's own PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pymysql

from tests.testbed.util import free_port, run, wait_until

BACKUPD_USER = "backupd"
BACKUPD_PASSWORD = "testbed-secret"
# What backupd needs: probe (PROCESS, REPLICATION CLIENT / BINLOG MONITOR), lock and flush
# (RELOAD, BACKUP via RELOAD on MariaDB), stream binlogs (REPLICATION SLAVE), kill long selects
# (CONNECTION ADMIN), and read everything for drills and checksums (SELECT).
BACKUPD_GRANTS = (
    "RELOAD, PROCESS, SELECT, LOCK TABLES, REPLICATION CLIENT, REPLICATION SLAVE, "
    "BINLOG MONITOR, CONNECTION ADMIN, SLAVE MONITOR"
)


class MariaDB:
    def __init__(
        self, base: Path, datadir: Path, server_id: int = 1, port: int = 0, extra: str = ""
    ) -> None:
        self.extra = extra  # more [mariadbd] lines (replication settings, ...)
        self.base = base
        self.datadir = datadir
        self.server_id = server_id
        self.port = port or free_port()
        self.socket = str(base / "mysqld.sock")
        self.defaults_file = base / "my.cnf"
        self.option_file = base / "backupd-client.cnf"
        self.log_file = base / "mariadbd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def binlog_dir(self) -> Path:
        return self.datadir / "binlog"

    def write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.defaults_file.write_text(
            textwrap.dedent(f"""\
                [mariadbd]
                user = root
                datadir = {self.datadir}
                socket = {self.socket}
                port = {self.port}
                bind-address = 127.0.0.1
                pid-file = {self.base}/mariadbd.pid
                log-error = {self.log_file}
                server_id = {self.server_id}
                log_bin = {self.binlog_dir}/mysql-bin
                binlog_format = ROW
                sync_binlog = 1
                innodb_flush_log_at_trx_commit = 1
                innodb_buffer_pool_size = 64M
                innodb_log_file_size = 32M
                skip-name-resolve
                max_connections = 100
                performance_schema = OFF
                """)
            + self.extra
        )
        self.option_file.write_text(
            f"[client]\nuser = {BACKUPD_USER}\npassword = {BACKUPD_PASSWORD}\n"
        )
        self.option_file.chmod(0o600)

    def install(self) -> MariaDB:
        """Create the data directory (seconds) and the backupd account."""
        self.write_config()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.binlog_dir.mkdir(parents=True, exist_ok=True)
        run(
            "mariadb-install-db",
            f"--defaults-file={self.defaults_file}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            timeout=180,
        )
        self.start()
        with self.connect_root() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"CREATE USER '{BACKUPD_USER}'@'localhost' IDENTIFIED BY '{BACKUPD_PASSWORD}'"
            )
            cursor.execute(f"GRANT {BACKUPD_GRANTS} ON *.* TO '{BACKUPD_USER}'@'localhost'")
            cursor.execute(
                f"CREATE USER '{BACKUPD_USER}'@'127.0.0.1' IDENTIFIED BY '{BACKUPD_PASSWORD}'"
            )
            cursor.execute(f"GRANT {BACKUPD_GRANTS} ON *.* TO '{BACKUPD_USER}'@'127.0.0.1'")
        return self

    def start(self) -> MariaDB:
        self.write_config()
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                ["mariadbd", f"--defaults-file={self.defaults_file}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._accepting, 60, f"mariadbd on port {self.port} (log {self.log_file})")
        return self

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{tail}")
        try:
            self.connect_root().close()
        except pymysql.err.OperationalError:
            return False
        return True

    def connect_root(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            unix_socket=self.socket, user="root", password="", autocommit=True, **kwargs
        )

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with self.connect_root() as conn, conn.cursor() as cursor:
            cursor.execute(statement)
            return list(cursor.fetchall())

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
