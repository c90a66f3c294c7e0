"""Server settings that put the archive at risk, as a table: value in, verdict out."""

from __future__ import annotations

import pytest

from backupd.database import DatabaseStatus
from backupd.server_settings import assess

SAFE = {
    "sync_binlog": "1",
    "binlog_row_image": "FULL",
    "binlog_checksum": "CRC32",
    "binlog_expire_logs_seconds": "0",
    "expire_logs_days": "0",
}


def server(flavor: str = "mariadb", fmt: str = "ROW", **settings: str) -> DatabaseStatus:
    return DatabaseStatus(flavor, "x", 1, True, fmt, None, "", settings={**SAFE, **settings})


def risky(db: DatabaseStatus, lag: float | None = 10.0) -> dict[str, str]:
    return {r.setting: r.risk for r in assess(db, lag) if r.at_risk}


def test_a_safe_server_has_no_risk() -> None:
    found = assess(server(), 10.0)
    assert [r.setting for r in found] == [
        "sync_binlog", "binlog_format", "binlog_row_image", "binlog_checksum", "binlog_expiry",
        "gtid_mode",
    ]  # fmt: skip
    assert not any(r.at_risk for r in found)


@pytest.mark.parametrize(
    ("db", "lag", "setting", "words"),
    [
        (server(sync_binlog="0"), 1.0, "sync_binlog", "crash"),
        (server(sync_binlog="100"), 1.0, "sync_binlog", "false gap"),
        (server(fmt="STATEMENT"), 1.0, "binlog_format", "nondeterministic"),
        (server(fmt="MIXED"), 1.0, "binlog_format", "statements"),
        (server(binlog_row_image="MINIMAL"), 1.0, "binlog_row_image", "primary keys"),
        (server(binlog_checksum="NONE"), 1.0, "binlog_checksum", "no CRC32"),
        (server(expire_logs_days="0.5"), 1.0, "binlog_expiry", "purged after 43200s"),
        (server(binlog_expire_logs_seconds="172800"), 90000.0, "binlog_expiry", "lags 90000s"),
        (server("mysql", gtid_mode="OFF"), 1.0, "gtid_mode", "no GTIDs"),
        (server("mysql", gtid_mode="ON_PERMISSIVE"), 1.0, "gtid_mode", "failover"),
    ],
)
def test_each_risk_says_what_it_risks(
    db: DatabaseStatus, lag: float, setting: str, words: str
) -> None:
    found = risky(db, lag)
    assert list(found) == [setting] and words in found[setting]


def test_expiry_is_weighed_against_the_lag() -> None:
    week = server(binlog_expire_logs_seconds=str(7 * 86400))
    assert risky(week, 3600.0) == {}
    assert risky(week, None) == {}  # archiving off or not started: nothing to weigh
    assert "binlog_expiry" in risky(week, 4 * 86400.0)
    days = server(expire_logs_days="10", binlog_expire_logs_seconds="0")
    assert [r.value for r in assess(days, 1.0) if r.setting == "binlog_expiry"] == ["864000s"]


def test_settings_the_server_lacks_are_left_out() -> None:
    db = DatabaseStatus("mysql", "8.4", 1, True, "ROW", None, "", settings={"sync_binlog": "1"})
    assert [r.setting for r in assess(db, 1.0)] == ["sync_binlog", "binlog_format"]
