"""Connections to the protected server and a read-only probe of its identity and binlog state.

Credentials come only from the option file's `[client]` section (never from backupd's own
config), so the config file can be world-readable and logs never see a password.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pymysql
import pymysql.cursors

from backupd.config import MysqlSection
from backupd.errors import DatabaseUnavailable


@dataclass(frozen=True)
class ServerVersion:
    flavor: str  # "mariadb" | "mysql"
    version: str
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, version: str) -> ServerVersion:
        flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
        numbers = version.split("-", 1)[0].split(".")
        parts = [int("".join(ch for ch in part if ch.isdigit()) or 0) for part in numbers[:3]]
        parts += [0] * (3 - len(parts))
        return cls(flavor, version, parts[0], parts[1], parts[2])

    def at_least(self, major: int, minor: int = 0, patch: int = 0) -> bool:
        return (self.major, self.minor, self.patch) >= (major, minor, patch)


@dataclass(frozen=True)
class BinlogCoordinate:
    file: str
    position: int

    def __str__(self) -> str:
        return f"{self.file}:{self.position}"


@dataclass(frozen=True)
class DatabaseStatus:
    flavor: str
    version: str
    server_id: int
    binlog_enabled: bool
    binlog_format: str
    coordinate: BinlogCoordinate | None
    gtid_position: str
    # What decides how safe the archive is (backupd/server_settings.py), as the server says.
    settings: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["coordinate"] = str(self.coordinate) if self.coordinate else None
        return data


def connect(section: MysqlSection, **overrides: Any) -> pymysql.connections.Connection[Any]:
    """Open a connection using the option file for credentials; raise DatabaseUnavailable."""
    kwargs: dict[str, Any] = {
        "connect_timeout": section.connect_timeout_seconds,
        "read_timeout": max(section.connect_timeout_seconds * 6, 30),
        "write_timeout": max(section.connect_timeout_seconds * 6, 30),
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if section.option_file and os.path.exists(section.option_file):
        kwargs["read_default_file"] = section.option_file
        kwargs["read_default_group"] = "client"
    if section.socket:
        kwargs["unix_socket"] = section.socket
    elif section.host:
        kwargs["host"] = section.host
        kwargs["port"] = section.port
    kwargs.update(overrides)
    try:
        return pymysql.connect(**kwargs)
    except (pymysql.err.MySQLError, OSError) as exc:
        raise DatabaseUnavailable(message=describe(exc)) from exc


def describe(exc: BaseException) -> str:
    """A one-line reason without credentials (pymysql puts none in its messages)."""
    if isinstance(exc, pymysql.err.MySQLError) and exc.args:
        return f"{exc.args[-1]} (error {exc.args[0]})" if len(exc.args) > 1 else str(exc.args[0])
    return str(exc) or type(exc).__name__


def query_one(conn: pymysql.connections.Connection[Any], sql: str) -> dict[str, Any] | None:
    with conn.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute(sql)
        row: dict[str, Any] | None = cursor.fetchone()
        return row


def server_version(conn: pymysql.connections.Connection[Any]) -> ServerVersion:
    row = query_one(conn, "SELECT VERSION() AS version")
    return ServerVersion.parse(str(row["version"] if row else ""))


def binlog_coordinate(
    conn: pymysql.connections.Connection[Any], version: ServerVersion
) -> BinlogCoordinate | None:
    """The current write position; MySQL >= 8.2 renamed SHOW MASTER STATUS."""
    newer_mysql = version.flavor == "mysql" and version.at_least(8, 2)
    sql = "SHOW BINARY LOG STATUS" if newer_mysql else "SHOW MASTER STATUS"
    row = query_one(conn, sql)
    if not row:
        return None
    return BinlogCoordinate(str(row["File"]), int(row["Position"]))


def identity_variable(version: ServerVersion) -> str:
    """The variable that names a server in the binlog archive's keys and in snapshot
    manifests; restore matches the two, so both must read it from here."""
    return "server_uuid" if version.flavor == "mysql" else "server_id"


def gtid_position(conn: pymysql.connections.Connection[Any], version: ServerVersion) -> str:
    variable = (
        "@@GLOBAL.gtid_binlog_pos" if version.flavor == "mariadb" else "@@GLOBAL.gtid_executed"
    )
    row = query_one(conn, f"SELECT {variable} AS gtid")
    return str(row["gtid"] or "") if row else ""


RISK_VARIABLES = (
    "sync_binlog",
    "binlog_format",
    "binlog_row_image",
    "binlog_checksum",
    "binlog_expire_logs_seconds",
    "expire_logs_days",
    "gtid_mode",
)


def risk_settings(conn: pymysql.connections.Connection[Any]) -> dict[str, str]:
    """The server variables behind backupd/server_settings.py; a variable this server does
    not have (gtid_mode on MariaDB, expire_logs_days on MySQL 8.4) is left out."""
    names = ", ".join(f"'{name}'" for name in RISK_VARIABLES)
    with conn.cursor() as cursor:
        cursor.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
        return {str(name).lower(): str(value) for name, value in cursor.fetchall()}


def probe(conn: pymysql.connections.Connection[Any]) -> DatabaseStatus:
    version = server_version(conn)
    row = query_one(
        conn,
        "SELECT @@GLOBAL.log_bin AS log_bin, @@GLOBAL.binlog_format AS fmt, "
        "@@GLOBAL.server_id AS server_id",
    )
    assert row is not None
    enabled = bool(int(row["log_bin"]))
    return DatabaseStatus(
        flavor=version.flavor,
        version=version.version,
        server_id=int(row["server_id"]),
        binlog_enabled=enabled,
        binlog_format=str(row["fmt"]),
        coordinate=binlog_coordinate(conn, version) if enabled else None,
        gtid_position=gtid_position(conn, version),
        settings=risk_settings(conn),
    )
