"""Proof that restored data is whole: CHECK TABLE and CHECKSUM TABLE on every user table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pymysql

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")


@dataclass(frozen=True)
class TableProof:
    table: str
    check: str  # CHECK TABLE's Msg_text for status rows ("OK" when whole)
    checksum: int | None

    @property
    def ok(self) -> bool:
        return self.check.upper() == "OK"


def user_tables(conn: pymysql.connections.Connection[Any]) -> list[str]:
    placeholders = ", ".join(["%s"] * len(SYSTEM_SCHEMAS))
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') "
            "FROM information_schema.tables "
            f"WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ({placeholders}) "
            "ORDER BY table_schema, table_name",
            SYSTEM_SCHEMAS,
        )
        return [str(row[0]) for row in cursor.fetchall()]


def prove(
    conn: pymysql.connections.Connection[Any], tables: list[str] | None = None
) -> list[TableProof]:
    proofs = []
    with conn.cursor() as cursor:
        for table in tables if tables is not None else user_tables(conn):
            cursor.execute(f"CHECK TABLE {table}")
            status = [
                row for row in cursor.fetchall() if str(row[2]).lower() in ("status", "error")
            ]
            check = str(status[-1][3]) if status else "no status"
            cursor.execute(f"CHECKSUM TABLE {table}")
            row = cursor.fetchone()
            checksum = int(row[1]) if row and row[1] is not None else None
            proofs.append(TableProof(table, check, checksum))
    return proofs
