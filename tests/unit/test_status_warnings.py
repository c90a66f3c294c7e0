"""The alarm watcher's warnings (status_warnings) are the status document's, item for item."""

from __future__ import annotations

from backupd.database import DatabaseStatus
from backupd.health import ProbeState
from backupd.server_settings import SettingRisk
from backupd.status import DaemonInfo, build_status, status_warnings


def test_the_warnings_alone_equal_the_documents() -> None:
    db = DatabaseStatus("mariadb", "10.11", 1, True, "MIXED", None, "", settings={})
    database: ProbeState[DatabaseStatus] = ProbeState(True, db, "", 1.0, 1.0)
    storage: ProbeState[None] = ProbeState(False, None, "timed out", 1.0, 1.0)
    risks = [
        SettingRisk("sync_binlog", "0", True, "a crash loses events"),
        SettingRisk("binlog_format", "MIXED", True, "statements"),  # its own older warning
        SettingRisk("binlog_checksum", "CRC32", False, ""),
    ]
    extra = ["last snapshot s1 failed: x", "binlog spool full: reading is paused"]
    alone = status_warnings(database, storage, extra, risks)
    document = build_status(DaemonInfo(0.0, "/c.toml", 0.0), database, storage, "s3://b", None,
                            extra, risks)  # fmt: skip
    assert alone == document["warnings"]
    assert alone == [
        *extra,
        "storage unreachable: timed out",
        "binlog_format is MIXED; ROW is required for safe replay",
        risks[0].warning(),
    ]
