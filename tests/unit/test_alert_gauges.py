"""The gauges alert rules divide by: the schedule's longest gap, read from the current config."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CollectorRegistry

from backupd.alert_gauges import AlertGauges, expected_interval
from backupd.config import Config

MONDAY = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("cron", "seconds"),
    [
        ("0 */6 * * *", 6 * 3600),
        ("0 * * * *", 3600),
        ("30 3 * * *", 86400),
        ("0 3 * * 0", 7 * 86400),
        ("0 3 * * 1-5", 3 * 86400),  # Friday to Monday, not the next day
        ("0 3 1 * *", 31 * 86400),
        ("0 0,6 * * *", 18 * 3600),  # uneven: the longer of 6 h and 18 h
        ("@daily", 86400),
        ("0 3 1 * 1", 7 * 86400),  # crontab(5): every 1st and every Monday
        ("0 */6 * * 1-5", 54 * 3600),  # Friday 18:00 to Monday 00:00: past 16 fires from Monday
    ],
)
def test_expected_interval_is_the_longest_gap(cron: str, seconds: int) -> None:
    assert expected_interval(cron, now=MONDAY) == seconds


def test_gauges_read_the_current_config_at_scrape_time() -> None:
    config = Config.model_validate({"snapshot": {"schedule": "0 3 * * *", "jitter_seconds": 60}})
    registry = CollectorRegistry()
    registry.register(AlertGauges(lambda: config))
    value = registry.get_sample_value
    assert value("backupd_snapshot_expected_interval_seconds") == 86400 + 60
    assert value("backupd_binlog_spool_max_bytes") == 1024**3
    assert value("backupd_drill_expected_interval_seconds") == 7 * 86400
    config = Config.model_validate({"binlog": {"spool_max_bytes": 4 * 1024**3}})
    assert value("backupd_binlog_spool_max_bytes") == 4 * 1024**3
    assert value("backupd_snapshot_expected_interval_seconds") == 6 * 3600


def test_a_daylight_saving_change_lengthens_the_gap_it_crosses() -> None:
    # Europe/Berlin falls back on 2026-10-25: that day's 03:00 comes 25 h after the last.
    october = dt.datetime(2026, 10, 20, tzinfo=dt.UTC).timestamp()
    assert expected_interval("0 3 * * *", "Europe/Berlin", october) == 25 * 3600
