"""Server settings that put the archive at risk: reported, never refused.

A pure function of what the database probe read and how far the archive lags, so it is
table-tested. Each entry says what the setting risks in words an operator can act on; the
status document lists them, a risky one is a warning, and `backupd_server_setting_risk`
exports each as 0|1 (docs/operations.md says what to do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from backupd.database import DatabaseStatus

SETTINGS = (
    "sync_binlog",
    "binlog_format",
    "binlog_row_image",
    "binlog_checksum",
    "binlog_expiry",
    "gtid_mode",
)
# Below this a stopped archive (daemon down, S3 unreachable) loses binlogs before anyone can
# repair it, however small the lag is now.
MIN_EXPIRY_SECONDS = 86400.0


@dataclass(frozen=True)
class SettingRisk:
    setting: str  # one of SETTINGS
    value: str
    at_risk: bool
    risk: str  # what the value puts at risk ("" when nothing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str:
        return f"server setting {self.setting}={self.value} puts the archive at risk: {self.risk}"


def assess(db: DatabaseStatus, archive_lag_seconds: float | None) -> list[SettingRisk]:
    """One entry per setting in SETTINGS that the server reports."""
    return assess_settings(db.flavor, db.binlog_format, db.settings, archive_lag_seconds)


def assess_settings(
    flavor: str, binlog_format: str, settings: dict[str, str], archive_lag_seconds: float | None
) -> list[SettingRisk]:
    """assess() on the variables as read (`backupctl check` reads them itself)."""
    sync = settings.get("sync_binlog")
    image = settings.get("binlog_row_image")
    checksum = settings.get("binlog_checksum")
    found = [
        _judge("sync_binlog", sync, sync == "1", SYNC_RISK),
        _judge("binlog_format", binlog_format, binlog_format.upper() == "ROW", FORMAT_RISK),
        _judge("binlog_row_image", image, (image or "").upper() == "FULL", IMAGE_RISK),
        _judge("binlog_checksum", checksum, (checksum or "").upper() != "NONE", CHECKSUM_RISK),
        _expiry(settings, archive_lag_seconds),
        _gtid_mode(flavor, settings.get("gtid_mode")),
    ]
    return [risk for risk in found if risk is not None]


SYNC_RISK = (
    "a server crash can lose binlog events of committed transactions; the archive may then "
    "hold a tail the server no longer has (resume records a false gap)"
)
FORMAT_RISK = (
    "statements are replayed, not rows: nondeterministic statements (NOW(), UUID(), LIMIT "
    "without ORDER BY, triggers) can restore different data"
)
IMAGE_RISK = (
    "row events hold only some columns: replay depends on identical primary keys on the "
    "restored server, and flashback or audit of the archive is impossible"
)
CHECKSUM_RISK = (
    "events carry no CRC32: corruption on the server's disk or on the way cannot be detected "
    "before it is archived (sizes and positions are still checked)"
)
GTID_RISK = (
    "transactions carry no GTIDs: GTID restore targets and following a failover by GTID are "
    "impossible"
)


def _judge(setting: str, value: str | None, safe: bool, risk: str) -> SettingRisk | None:
    """None when the server does not have the setting."""
    if value is None:
        return None
    return SettingRisk(setting, value, not safe, "" if safe else risk)


def expiry_seconds(settings: dict[str, str]) -> float:
    """When the server purges binlogs (0 = never): binlog_expire_logs_seconds wins over
    expire_logs_days, as on both servers."""
    try:
        seconds = float(settings.get("binlog_expire_logs_seconds") or 0)
        days = float(settings.get("expire_logs_days") or 0)
    except ValueError:
        return 0.0
    return seconds if seconds > 0 else days * 86400.0


def _expiry(settings: dict[str, str], lag: float | None) -> SettingRisk | None:
    if "binlog_expire_logs_seconds" not in settings and "expire_logs_days" not in settings:
        return None
    expiry = expiry_seconds(settings)
    value = f"{expiry:.0f}s" if expiry else "never"
    risk = expiry_risk(expiry, lag)
    return SettingRisk("binlog_expiry", value, bool(risk), risk)


def expiry_risk(expiry: float, lag: float | None) -> str:
    """What purging binlogs after `expiry` seconds (0: never) risks at this archive lag."""
    if not expiry:
        return ""
    if expiry < MIN_EXPIRY_SECONDS:
        return (
            f"binlogs are purged after {expiry:.0f}s: if archiving stops for that long "
            "(daemon down, storage unreachable) unarchived binlogs are lost for good"
        )
    if lag is not None and lag >= expiry / 2:
        return (
            f"the archive lags {lag:.0f}s behind, half or more of the {expiry:.0f}s after "
            "which the server purges binlogs: unarchived files may be purged (a gap no "
            "restore can cross)"
        )
    return ""


def _gtid_mode(flavor: str, value: str | None) -> SettingRisk | None:
    if flavor == "mariadb":
        return SettingRisk("gtid_mode", "ON (MariaDB: always)", False, "")
    return _judge("gtid_mode", value, (value or "").upper() == "ON", GTID_RISK)
