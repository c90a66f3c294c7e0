"""GTID targets on MySQL archives, with no MySQL server: streams built byte by byte
(tests/binlog_fakes.py) go through the planner and the end-point walker. A target
`uuid:N` replays up to and including that transaction; one already in the snapshot's
gtid_executed replays nothing; a GTID of the other flavor is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupd.binlog import events as ev
from backupd.restore import mysql_gtid
from backupd.restore.endpoint import resolve
from backupd.restore.plan import Position, RestoreImpossible, SnapshotPoint, make_plan
from backupd.restore.plan import Segment as PlanSegment
from backupd.restore_target import parse_target
from tests.binlog_fakes import MYSQL_SID
from tests.unit.test_mysql_event_formats import cut, mysql_file, write

SID = MYSQL_SID.hex()
UUID = f"{SID[:8]}-{SID[8:12]}-{SID[12:16]}-{SID[16:20]}-{SID[20:]}"


def test_the_walk_reads_mysql_gtids() -> None:
    fake = mysql_file(["gtid", "compressed", "ddl"])
    gtids = [ev.mysql_gtid(raw) for _at, raw in fake.events if raw[4] == ev.MYSQL_GTID]
    assert gtids == [f"{UUID}:1", f"{UUID}:2", f"{UUID}:3"]


@pytest.mark.parametrize("kinds", [["gtid"] * 4, ["compressed"] * 4, ["ddl", "gtid"] * 2])
def test_gtid_target_stops_after_that_transaction(tmp_path: Path, kinds: list[str]) -> None:
    fake = mysql_file(kinds)
    path = write(tmp_path, fake)
    start = Position(fake.name, min(fake.boundaries))
    end = resolve([path], start, "", parse_target(f"{UUID.upper()}:3"), "mysql")
    assert end.transactions == 3 and end.gtid == f"{UUID}:3"
    assert end.position == Position(fake.name, sorted(fake.boundaries)[3])
    with pytest.raises(RestoreImpossible, match="not among the archived"):
        resolve([path], start, "", parse_target(f"{UUID}:9"), "mysql")


def test_a_gtid_in_the_snapshot_replays_nothing(tmp_path: Path) -> None:
    fake = mysql_file(["gtid"] * 3)
    path = write(tmp_path, fake)
    start = Position(fake.name, sorted(fake.boundaries)[2])
    end = resolve([path], start, f"{UUID}:1-2", parse_target(f"{UUID}:2"), "mysql")
    assert end.transactions == 0 and end.position == start


def test_gtids_of_the_other_flavor_are_refused(tmp_path: Path) -> None:
    fake = mysql_file(["gtid"])
    path = write(tmp_path, fake)
    start = Position(fake.name, min(fake.boundaries))
    with pytest.raises(RestoreImpossible, match="MariaDB GTID, but the archive was written by"):
        resolve([path], start, "", parse_target("0-1-1"), "mysql")
    with pytest.raises(RestoreImpossible, match="MySQL GTID, but the archive was written by"):
        resolve([path], start, "", parse_target(f"{UUID}:1"), "mariadb")


def test_planner_chooses_a_snapshot_before_a_mysql_gtid() -> None:
    fake = mysql_file(["gtid"] * 5)
    segments = cut(fake, flush=0.15)
    plan_segments = [PlanSegment(f"{s.file}/{s.start}-{s.end}", s.extent) for s in segments]
    bounds = sorted(fake.boundaries)
    early = SnapshotPoint("early", 1.0, Position(fake.name, bounds[1]), f"{UUID}:1")
    late = SnapshotPoint("late", 2.0, Position(fake.name, bounds[4]), f"{UUID}:1-4")
    plan = make_plan(parse_target(f"{UUID}:3"), [early, late], plan_segments)
    assert plan.snapshot.set_id == "early"  # the later set already holds 4 > 3
    plan = make_plan(parse_target(f"{UUID}:5"), [early, late], plan_segments)
    assert plan.snapshot.set_id == "late"
    with pytest.raises(RestoreImpossible, match="before the oldest usable snapshot"):
        make_plan(parse_target(f"{UUID}:3"), [late], plan_segments)


def test_gtid_sets() -> None:
    text = f"{UUID.upper()}:1-100:105,\n4f22fa47-71ca-11e1-9e33-c80aa9429562:1-7:tag:1-3"
    assert mysql_gtid.contains(text, UUID, 100) and mysql_gtid.contains(text, UUID, 105)
    assert not mysql_gtid.contains(text, UUID, 101)
    assert mysql_gtid.reach(text, UUID) == 105
    assert mysql_gtid.reach(text, "4f22fa47-71ca-11e1-9e33-c80aa9429562") == 7
    assert mysql_gtid.reach(text, "4f22fa47-71ca-11e1-9e33-c80aa9429562:tag") == 3
    assert mysql_gtid.reach("", UUID) == 0
