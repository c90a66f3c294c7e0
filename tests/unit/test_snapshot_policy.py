"""Pure snapshot policy, table-tested: retention, long-query handling, schedule timing,
lock statements per server, and the manifest format."""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path

import pytest

from backupd.config import RetentionSection
from backupd.database import ServerVersion
from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot, manifest_key, new_set_id
from backupd.snapshot.coordinator import long_query_action, snapshot_tags
from backupd.snapshot.dblock import lock_statements
from backupd.snapshot.long_queries import LongQuery
from backupd.snapshot.retention import plan_retention
from backupd.snapshot.schedule import missed_run, retry_delay

OWNER = "db1"


def at(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


def snap(set_id: str, when: str, state: str = "completed", owner: str = OWNER) -> SnapshotSet:
    return SnapshotSet(
        set_id=set_id, provider="ebs", host="h", owner=owner, version="0", state=state,
        started_at=at(when),
    )  # fmt: skip


def rules(**kw: int) -> RetentionSection:
    base = {"keep_last": 0, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}
    return RetentionSection(**{**base, **kw})


SIX_HOURLY = [snap(f"s{i}", f"2026-11-{20 + i // 4:02d} {i % 4 * 6:02d}:00") for i in range(12)]


@pytest.mark.parametrize(
    ("sets", "retention", "kept"),
    [
        # keep_last keeps the newest N completed.
        (SIX_HOURLY, rules(keep_last=2), {"s11", "s10"}),
        # daily keeps the newest of each of the last N days.
        (SIX_HOURLY, rules(daily=2), {"s11", "s7"}),
        # union: keep_last 1 plus daily 3.
        (SIX_HOURLY, rules(keep_last=1, daily=3), {"s11", "s7", "s3"}),
        # hourly: every set is in its own hour.
        (SIX_HOURLY, rules(hourly=3), {"s11", "s10", "s9"}),
        # monthly across a month boundary.
        (
            [
                snap("a", "2026-10-30 00:00"),
                snap("b", "2026-10-31 00:00"),
                snap("c", "2026-11-01 00:00"),
            ],
            rules(monthly=2),
            {"b", "c"},
        ),
        # weekly by ISO week (2026-11-22 is a Sunday, 2026-11-23 a Monday).
        (
            [snap("sun", "2026-11-22 10:00"), snap("mon", "2026-11-23 10:00")],
            rules(weekly=1),
            {"mon"},
        ),
        # yearly.
        (
            [snap("y1", "2025-06-01 00:00"), snap("y2", "2026-06-01 00:00")],
            rules(yearly=5),
            {"y1", "y2"},
        ),
    ],
)
def test_retention_union_of_rules(
    sets: list[SnapshotSet], retention: RetentionSection, kept: set[str]
) -> None:
    plan = plan_retention(sets, retention, OWNER)
    assert set(plan.keep) == kept
    assert set(plan.delete) == {s.set_id for s in sets} - kept


def test_retention_never_touches_pending_foreign_or_the_newest() -> None:
    sets = [
        snap("old", "2026-11-01 00:00"),
        snap("foreign", "2026-11-02 00:00", owner="db2"),
        snap("failed-old", "2026-11-03 00:00", state="failed"),
        snap("newest", "2026-11-04 00:00"),
        snap("pending", "2026-11-05 00:00", state="pending"),
        snap("skipped-new", "2026-11-06 00:00", state="skipped"),
    ]
    plan = plan_retention(sets, rules(hourly=1), OWNER)
    assert set(plan.keep) == {"newest"}
    assert sorted(plan.delete) == ["failed-old", "old"]


def test_retention_with_nothing_completed_deletes_nothing() -> None:
    sets = [snap("p", "2026-11-01 00:00", "pending"), snap("f", "2026-11-01 01:00", "failed")]
    assert plan_retention(sets, rules(keep_last=1), OWNER).delete == []


def query(info: str) -> LongQuery:
    return LongQuery(7, "app", 120.0, "Query", info)


@pytest.mark.parametrize(
    ("policy", "queries", "waited", "action"),
    [
        ("skip", [], 0, "proceed"),
        ("skip", [query("SELECT 1")], 0, "skip"),
        ("wait", [query("UPDATE t SET a=1")], 10, "wait"),
        ("wait", [query("UPDATE t SET a=1")], 300, "skip"),
        ("kill-selects", [query("SELECT * FROM big")], 0, "wait"),
        ("kill-selects", [query("SELECT * FROM big")], 6, "kill"),
        ("kill-selects", [query("  (select a from t)")], 6, "kill"),
        ("kill-selects", [query("WITH x AS (SELECT 1) SELECT * FROM x")], 6, "skip"),
        ("kill-selects", [query("SELECT * FROM t FOR UPDATE")], 6, "skip"),
        ("kill-selects", [query("SELECT a INTO @x FROM t")], 6, "skip"),
        ("kill-selects", [query("SELECT 1"), query("ALTER TABLE t ADD c INT")], 6, "skip"),
    ],
)
def test_long_query_action(
    policy: str, queries: list[LongQuery], waited: float, action: str
) -> None:
    assert long_query_action(policy, queries, waited, budget=300) == action


@pytest.mark.parametrize(
    ("version", "block", "release"),
    [
        (
            "10.11.6-MariaDB-0+deb12u1-log",
            ["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"],
            ["BACKUP STAGE END"],
        ),
        ("10.3.39-MariaDB", ["FLUSH TABLES WITH READ LOCK"], ["UNLOCK TABLES"]),
        ("8.0.36", ["FLUSH TABLES WITH READ LOCK"], ["UNLOCK TABLES"]),
        ("8.4.0", ["FLUSH TABLES WITH READ LOCK"], ["UNLOCK TABLES"]),
    ],
)
def test_lock_statements_per_server(version: str, block: list[str], release: list[str]) -> None:
    assert lock_statements(ServerVersion.parse(version)) == (block, release)


@pytest.mark.parametrize(
    ("cron", "last", "now", "missed"),
    [
        ("0 */6 * * *", "2026-11-26 00:00", "2026-11-26 05:59", False),
        ("0 */6 * * *", "2026-11-26 00:00", "2026-11-26 06:00", True),
        ("0 */6 * * *", "2026-11-25 00:00", "2026-11-26 05:00", True),
        ("30 2 * * *", "2026-11-26 02:30", "2026-11-27 02:29", False),
    ],
)
def test_missed_run(cron: str, last: str, now: str, missed: bool) -> None:
    assert missed_run(cron, at(last), at(now)) is missed


def test_no_run_recorded_is_not_a_miss() -> None:
    assert missed_run("* * * * *", 0.0, at("2026-11-26 00:00")) is False


@pytest.mark.parametrize(("skips", "delay"), [(1, 60), (2, 120), (3, 240), (10, 3600)])
def test_retry_delay(skips: int, delay: float) -> None:
    assert retry_delay(skips, cap=3600) == delay


def test_manifest_round_trip_and_tags() -> None:
    record = snap(new_set_id(at("2026-11-26 10:15")), "2026-11-26 10:15").with_(
        coordinate="mysql-bin.000042:1234",
        gtid="0-1-4242",
        volumes=[VolumeSnapshot("/data", "vol-1", "snap-1", "completed", copies={"eu": "s2"})],
    )
    assert record.set_id.startswith("20261126T101500Z-")
    assert manifest_key(record.set_id) == f"snapshots/{record.set_id}.json"
    assert SnapshotSet.from_json(record.to_json()) == record
    tags = snapshot_tags(record, {"team": "db", "backupd:set-id": "spoofed"})
    assert tags["backupd:set-id"] == record.set_id and tags["team"] == "db"
    assert tags["backupd:binlog-coordinate"] == "mysql-bin.000042:1234"
    long_gtid = record.with_(gtid="0-1-1," * 100)
    assert len(snapshot_tags(long_gtid, {})["backupd:gtid"]) == 255
    with pytest.raises(ValueError):
        SnapshotSet.from_json(b"[]")


def test_schedule_job_never_overlaps_and_catches_up_once() -> None:
    from prometheus_client import CollectorRegistry

    from backupd.config import SnapshotSection
    from backupd.snapshot.metrics import SnapshotMetrics
    from backupd.snapshot.schedule import JOB_ID, RETRY_JOB_ID, Schedule

    fired: list[int] = []
    section = SnapshotSection(schedule="0 0 1 1 *", jitter_seconds=30)
    schedule = Schedule(section, lambda: fired.append(1), SnapshotMetrics(CollectorRegistry()))
    schedule.scheduler.start(paused=True)  # inspect the jobs without running them
    schedule._add()
    try:
        job = schedule.scheduler.get_job(JOB_ID)
        assert job.max_instances == 1 and job.coalesce is True
        assert job.trigger.jitter == 30
        schedule.catch_up(at("2024-01-01 00:00"))
        schedule.catch_up(at("2024-01-01 00:00"))
        assert [j.id for j in schedule.scheduler.get_jobs()].count(RETRY_JOB_ID) == 1
        schedule.reschedule(section.model_copy(update={"enabled": False}))
        assert schedule.next_run_at() is None
    finally:
        schedule.stop()


def test_watchdog_process_fires_on_its_clock(tmp_path: Path) -> None:
    """Without root FITHAW fails harmlessly; the protocol (ready, clock, report) is the same."""
    from backupd.snapshot.freezer import Watchdog

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dog = Watchdog([fd], max_seconds=0.2)
        dog.armed()
        assert dog.process.wait(10) == 2  # it thawed on the clock and said so
        dog.close()
        assert dog.fired
        quiet = Watchdog([fd], max_seconds=60)
        quiet.armed()
        quiet.close()  # thawed in time: it exits cleanly
        assert not quiet.fired and quiet.process.returncode == 0
    finally:
        os.close(fd)


def test_weekday_schedule_fires_on_cron_weekdays() -> None:
    import datetime as dt

    from backupd.cron import trigger_for

    friday = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)  # after Friday's 02:30
    nxt = trigger_for("30 2 * * 1-5").get_next_fire_time(None, friday)
    assert nxt == dt.datetime(2026, 11, 30, 2, 30, tzinfo=dt.UTC)  # Monday, not Saturday
