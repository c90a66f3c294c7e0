"""The pure parts of `backupctl check`: grants, server settings, expiry, clock, output."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupd.check import config as config_check
from backupd.check import local, mysql
from backupd.check import storage as storage_check
from backupd.check.result import FAIL, OK, WARN, Result, fail, nagios, ok, report, warn
from backupd.config import Config, StorageSection
from backupd.database import DatabaseStatus
from backupd.server_settings import assess, expiry_seconds
from backupd.storage import open_store

GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "sync_binlog": "1",
    "innodb_flush_log_at_trx_commit": "1",
    "binlog_checksum": "CRC32",
    "gtid_mode": "ON",
}


def statuses(results: list[Result]) -> dict[str, str]:
    return {r.name: r.status for r in results}


def test_global_privileges_normalise_aliases_and_ignore_database_grants() -> None:
    grants = [
        "GRANT RELOAD, PROCESS, REPLICATION CLIENT, REPLICATION REPLICA ON *.* TO `b`@`localhost`",
        "GRANT SELECT ON `app`.* TO `b`@`localhost`",
        "GRANT CONNECTION_ADMIN ON *.* TO `b`@`localhost`",
    ]
    assert mysql.global_privileges(grants) == {
        "RELOAD", "PROCESS", "BINLOG MONITOR", "REPLICATION SLAVE", "CONNECTION ADMIN",
    }  # fmt: skip


def test_privileges_follow_enabled_features() -> None:
    config = Config.model_validate(
        {"binlog": {"enabled": False}, "snapshot": {"on_long_query": "kill-selects"}}
    )
    grants = ["GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO `b`@`%`"]
    found = statuses(mysql.check_privileges(config, grants, "'b'@'%'"))
    assert "mysql.privilege.replication" not in found  # binlog archiving is off
    assert found["mysql.privilege.kill"] == FAIL
    assert found["mysql.privilege.reload"] == OK
    everything = ["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]
    assert set(statuses(mysql.check_privileges(config, everything, "root")).values()) == {OK}


@pytest.mark.parametrize(
    ("change", "name", "status"),
    [
        ({}, "mysql.binlog_format", OK),
        ({"binlog_format": "STATEMENT"}, "mysql.binlog_format", FAIL),
        ({"binlog_format": "MIXED"}, "mysql.binlog_format", FAIL),
        ({"log_bin": "OFF"}, "mysql.log_bin", FAIL),
        ({"binlog_row_image": "MINIMAL"}, "mysql.binlog_row_image", WARN),
        ({"sync_binlog": "0"}, "mysql.sync_binlog", WARN),
        ({"innodb_flush_log_at_trx_commit": "2"}, "mysql.innodb_flush_log_at_trx_commit", WARN),
        ({"binlog_checksum": "NONE"}, "mysql.binlog_checksum", WARN),
        ({"gtid_mode": "OFF"}, "mysql.gtid", WARN),
    ],
)
def test_server_settings(change: dict[str, str], name: str, status: str) -> None:
    assert statuses(mysql.check_variables({**GOOD, **change}, "mysql"))[name] == status


@pytest.mark.parametrize(
    ("change", "name", "setting"),
    [
        ({"binlog_format": "STATEMENT"}, "mysql.binlog_format", "binlog_format"),
        ({"binlog_row_image": "MINIMAL"}, "mysql.binlog_row_image", "binlog_row_image"),
        ({"sync_binlog": "0"}, "mysql.sync_binlog", "sync_binlog"),
        ({"binlog_checksum": "NONE"}, "mysql.binlog_checksum", "binlog_checksum"),
        ({"gtid_mode": "OFF"}, "mysql.gtid", "gtid_mode"),
    ],
)
def test_the_check_judges_settings_as_the_daemon_does(
    change: dict[str, str], name: str, setting: str
) -> None:
    """One owner for the rules (server_settings): check says what the status warns."""
    variables = {**GOOD, **change}
    settings = {k: str(v) for k, v in variables.items() if k != "binlog_format"}
    daemon = assess(DatabaseStatus("mysql", "8.0", 1, True, variables["binlog_format"], None,
                                   "", settings=settings), None)  # fmt: skip
    (risk,) = [r for r in daemon if r.setting == setting]
    (result,) = [r for r in mysql.check_variables(variables, "mysql") if r.name == name]
    assert risk.at_risk and risk.risk in result.detail


@pytest.mark.parametrize(
    ("expiry", "lag", "status"),
    [
        (0, None, OK),
        (7 * 86400, 60, OK),
        (7 * 86400, None, OK),
        (3600, 60, WARN),  # under a day: an outage of backupd outlives the binlogs
        (7 * 86400, 4 * 86400, WARN),
        (7 * 86400, 8 * 86400, FAIL),
    ],
)
def test_expiry_against_archive_lag(expiry: float, lag: float | None, status: str) -> None:
    assert mysql.check_expiry(expiry, lag).status == status


def test_expiry_from_days_when_seconds_unset() -> None:
    settings = {"binlog_expire_logs_seconds": "0", "expire_logs_days": "3"}
    assert expiry_seconds(settings) == 3 * 86400


def test_clock_from_chrony_then_timesyncd_else_unknown() -> None:
    chrony = "Reference ID    : A9FEA97B\nSystem time     : 0.750000 seconds slow of NTP time\n"
    assert local.parse_chrony(chrony) == -0.75
    answers = {"chronyc": chrony}
    assert local.check_clock(lambda argv: answers.get(argv[0])).status == WARN
    answers = {"timedatectl": "NTPSynchronized=yes\n"}
    assert local.check_clock(lambda argv: answers.get(argv[0])).status == OK
    status = "       Server: 169.254.169.123\n       Offset: -1.5ms\n        Delay: 0.3ms\n"
    assert local.parse_timesync_offset(status) == pytest.approx(-0.0015)
    timesync = local.check_clock(lambda argv: status if argv[1:] == ["timesync-status"] else None)
    assert timesync.status == OK and timesync.detail == "systemd-timesyncd: 0.002 s slow"
    unknown = local.check_clock(lambda argv: None)
    assert unknown.status == WARN and "unknown" in unknown.detail
    far = "System time     : 45.0 seconds fast of NTP time\n"
    assert local.check_clock(lambda argv: far if argv[0] == "chronyc" else None).status == FAIL


def test_fstype_is_the_longest_matching_mount(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 7:0 / /srv/data rw shared:1 - xfs /dev/loop0 rw\n"
        "41 22 0:5 / /srv/data\\040two rw - tmpfs tmpfs rw\n"
    )
    assert local.mount_fstype("/srv/data/mysql", str(info)) == "xfs"
    assert local.mount_fstype("/srv/database", str(info)) == "ext4"
    assert local.mount_fstype("/srv/data two", str(info)) == "tmpfs"


def test_report_and_nagios_line() -> None:
    results = [ok("a.one", "fine"), warn("b.two", "meh", "do x"), fail("c.three", "bad", "do y")]
    document = report(results)
    assert document["status"] == FAIL and not document["ok"]
    assert document["counts"] == {OK: 1, WARN: 1, FAIL: 1}
    code, line = nagios(results)
    assert code == 2
    assert line == "BACKUPD CHECK CRITICAL - 1 failed, 1 warnings, 1 ok - c.three: bad; b.two: meh"
    assert nagios(results[:2])[0] == 1 and nagios(results[:1]) == (
        0,
        "BACKUPD CHECK OK - 0 failed, 0 warnings, 1 ok",
    )


def test_file_repository_probe_and_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    section = StorageSection(url=f"file://{tmp_path / 'repo'}")
    (missing,) = storage_check.check(section, open_store(section))
    assert missing.status == FAIL and "does not exist" in missing.detail
    assert not (tmp_path / "repo").exists()  # made by root here, the daemon could not write it
    (tmp_path / "repo").mkdir()
    results = storage_check.check(section, open_store(section))
    assert statuses(results) == {f"storage.{s}": OK for s in ("put", "get", "list", "delete")}
    assert list((tmp_path / "repo").rglob("probe-*")) == []


def test_binlog_client_id_must_differ_from_the_servers() -> None:
    assert mysql.check_client_id(4000000001, "1").status == OK
    assert mysql.check_client_id(7, "7").status == FAIL


def test_notify_runs_on_failure_with_the_first_failure(tmp_path: Path) -> None:
    from backupd.check.ctl import notify_failures
    from backupd.check.result import Result
    from backupd.config import Config

    out = tmp_path / "env"
    config = Config.model_validate(
        {"notify": {"on_failure": ["/bin/sh", "-c", f"env > {out}"], "timeout_seconds": 10.0}}
    )
    notify_failures(config, [Result("mysql.connect", "OK", "fine")])
    assert not out.exists()  # nothing failed: nothing runs
    notify_failures(
        config,
        [Result("storage.put", "FAIL", "NoSuchBucket"), Result("mysql.grants", "FAIL", "x")],
    )
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["BACKUPD_EVENT"] == "check" and env["BACKUPD_RESULT"] == "failed"
    assert env["BACKUPD_ERROR"] == "storage.put: NoSuchBucket"
    assert "2 failed" in env["BACKUPD_MESSAGE"]


def test_snapshots_enabled_without_mounts_is_one_config_line() -> None:
    """The combination check-config refuses; the mount checks do not repeat it."""
    config = Config.model_validate({"snapshot": {"enabled": True, "mounts": []}})
    (line,) = config_check.check(config)
    assert line.name == "config.combination[snapshot.mounts]" and line.status == FAIL
    assert local.check_mounts(config) == []
    assert config_check.check(Config.model_validate({"snapshot": {"mounts": ["/data"]}})) == []
