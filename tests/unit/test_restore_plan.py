"""Restore planning as a table: snapshot choice, chain continuity, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupd.binlog.extent import Extent
from backupd.restore.plan import (
    Gap,
    Position,
    RestoreImpossible,
    Segment,
    SnapshotPoint,
    TimelineInput,
    follow_chain,
    index_segments,
    make_plan,
    plan_lineage,
)
from backupd.restore_target import parse_target

F1, F2, F3 = "mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"


def seg(
    file: str,
    start: int,
    end: int,
    ts: tuple[int, int],
    gtids: tuple[str, str] = ("", ""),
    closes: bool = False,
) -> Segment:
    kind = "eof" if closes else "tx"
    extent = Extent(file, start, end, ts[0], ts[1], gtids[0], gtids[1], kind)
    return Segment(f"{file}/{start}-{end}", extent)


# A file rotated once: F1 [0,1000) closes it, F2 continues; seqs 1..9, times 100..190
ARCHIVE = [
    seg(F1, 0, 400, (100, 110), ("0-1-1", "0-1-2")),
    seg(F1, 400, 1000, (120, 130), ("0-1-3", "0-1-4"), closes=True),
    seg(F2, 0, 500, (140, 150), ("0-1-5", "0-1-6")),
    seg(F2, 500, 900, (160, 190), ("0-1-7", "0-1-9")),
]
SNAP_A = SnapshotPoint("a", 105.0, Position(F1, 256), "0-1-1")
SNAP_B = SnapshotPoint("b", 145.0, Position(F2, 300), "0-1-5")


def at(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("target", "snapshot", "keys"),
    [
        ("latest", "b", [f"{F2}/0-500", f"{F2}/500-900"]),
        (at(150), "b", [f"{F2}/0-500", f"{F2}/500-900"]),
        (at(145), "b", [f"{F2}/0-500"]),
        (at(130), "a", [f"{F1}/0-400", f"{F1}/400-1000", f"{F2}/0-500"]),
        (at(125), "a", [f"{F1}/0-400", f"{F1}/400-1000", f"{F2}/0-500"]),
        ("0-1-4", "a", [f"{F1}/0-400", f"{F1}/400-1000"]),
        ("0-1-8", "b", [f"{F2}/0-500", f"{F2}/500-900"]),
        ("0-1-5", "b", [f"{F2}/0-500"]),
        (f"{F2}:200", "a", [f"{F1}/0-400", f"{F1}/400-1000", f"{F2}/0-500"]),
        (f"{F2}:700", "b", [f"{F2}/0-500", f"{F2}/500-900"]),
    ],
)
def test_plan_picks_newest_snapshot_with_a_chain(
    target: str, snapshot: str, keys: list[str]
) -> None:
    plan = make_plan(parse_target(target), [SNAP_A, SNAP_B], ARCHIVE)
    assert plan.snapshot.set_id == snapshot
    assert [s.key for s in plan.segments] == keys
    assert plan.start == plan.snapshot.coordinate


@pytest.mark.parametrize(
    ("target", "segments", "gaps", "message"),
    [
        (at(50), ARCHIVE, [], "before the oldest usable snapshot"),
        ("0-0-0", ARCHIVE, [], ""),
        (at(500), ARCHIVE, [], "after the newest archived event"),
        (at(125), [s for s in ARCHIVE if s.start != 400], [], "mysql-bin.000001 stops at 400"),
        (
            at(170),
            [s for s in ARCHIVE if s.file != F2 or s.start != 0],
            [],
            "no archived segment covers mysql-bin.000002:300",
        ),
        ("0-1-99", ARCHIVE, [], "GTID 0-1-99 is not in the archive"),
        (f"{F3}:100", ARCHIVE, [], "before mysql-bin.000003:100"),
        ("latest", ARCHIVE, [Gap(Position(F2, 500), Position(F2, 900))], "recorded gap"),
        (
            "latest",
            [*[s for s in ARCHIVE if s.file != F2], seg(F3, 0, 100, (200, 210))],
            [],
            "mysql-bin.000002 is missing",
        ),
    ],
)
def test_refusals(target: str, segments: list[Segment], gaps: list[Gap], message: str) -> None:
    if not message:  # a GTID sequence below every snapshot's is "before the oldest"
        message = "before the oldest usable snapshot"
    with pytest.raises(RestoreImpossible, match=message):
        make_plan(parse_target(target), [SNAP_A, SNAP_B], segments, gaps)


def test_falls_back_to_an_older_snapshot_when_the_newer_chain_is_broken() -> None:
    # B's chain starts in F2/0-500, which is missing; A reaches the target through F1 only
    segments = [s for s in ARCHIVE if not (s.file == F2 and s.start == 0)]
    plan = make_plan(parse_target(at(125)), [SNAP_A, SNAP_B], segments)
    assert plan.snapshot.set_id == "a"


def test_unusable_snapshots_are_named() -> None:
    bad = SnapshotPoint("c", 1.0, Position(F1, 4), "", usable=False, why_unusable="pending")
    with pytest.raises(RestoreImpossible, match="c: pending"):
        make_plan(parse_target("latest"), [bad], ARCHIVE)


def test_missing_whole_file_is_named() -> None:
    segments = [*ARCHIVE, seg(F3, 0, 100, (200, 210))]
    chain = follow_chain(index_segments([s for s in segments if s.file != F2]), SNAP_A.coordinate)
    assert "binlog file mysql-bin.000002 is missing" in chain.broken


def test_chain_from_the_end_of_a_closed_file_continues_in_the_next() -> None:
    chain = follow_chain(index_segments(ARCHIVE), Position(F1, 1000))
    assert [s.file for s in chain.segments] == [F2, F2]
    assert chain.end == Position(F2, 900) and not chain.broken


def test_positions_order_by_file_number() -> None:
    assert Position("b.000009", 999) < Position("b.000010", 4)


def test_time_target_takes_a_contiguous_prefix_when_timestamps_go_backwards() -> None:
    """SET TIMESTAMP or a stepped clock: filtering by timestamps would leave a hole."""
    archive = [
        seg(F3, 0, 400, (100, 110)),
        seg(F3, 400, 800, (120, 130)),  # the first commit after the target ends here
        seg(F3, 800, 1000, (100, 112)),  # earlier timestamps again, after it
    ]
    snap = SnapshotPoint("c", 99.0, Position(F3, 4), "")
    plan = make_plan(parse_target(at(115)), [snap], archive)
    assert [s.key for s in plan.segments] == [f"{F3}/0-400", f"{F3}/400-800"]


# Two timelines: a failover at F2:900 on timeline 1; timeline 2 (the new primary's files,
# numbered apart) holds the same history up to G1:300 and goes on from there.
G1, G2 = "other-bin.000001", "other-bin.000002"
TL2 = [
    seg(G1, 0, 300, (140, 190), ("0-1-5", "0-1-9")),
    seg(G1, 300, 700, (200, 210), ("0-2-10", "0-2-12")),
    seg(G1, 700, 900, (215, 220), ("0-2-13", "0-2-13"), closes=True),
    seg(G2, 0, 400, (230, 240), ("0-2-14", "0-2-15")),
]


def lineage(
    crossable: bool = True, tl2_points: list[SnapshotPoint] | None = None
) -> list[TimelineInput]:
    return [
        TimelineInput(1, [SNAP_A, SNAP_B], ARCHIVE),
        TimelineInput(
            2,
            tl2_points or [],
            TL2,
            parent_end=Position(F2, 900) if crossable else None,
            child_start=Position(G1, 300) if crossable else None,
            why="failover",
        ),
    ]


def test_lineage_plan_leaves_the_parent_at_the_branch_and_enters_the_child() -> None:
    plan = plan_lineage(parse_target("0-2-15"), lineage())
    assert plan.snapshot.set_id == "b"
    first, second = plan.legs
    assert (first.timeline, first.start, first.stop) == (1, Position(F2, 300), Position(F2, 900))
    assert [s.key for s in first.segments] == [f"{F2}/0-500", f"{F2}/500-900"]
    assert (second.timeline, second.start, second.stop) == (2, Position(G1, 300), None)
    assert [s.key for s in second.segments] == [
        f"{G1}/300-700", f"{G1}/700-900", f"{G2}/0-400",
    ]  # fmt: skip


def test_lineage_plan_prefers_a_set_on_the_target_timeline() -> None:
    on_two = SnapshotPoint("c", 205.0, Position(G1, 700), "0-2-12")
    plan = plan_lineage(parse_target("latest"), lineage(tl2_points=[on_two]))
    assert plan.snapshot.set_id == "c" and [leg.timeline for leg in plan.legs] == [2]


def test_lineage_plan_never_crosses_an_unknown_branch_point() -> None:
    with pytest.raises(RestoreImpossible, match="timeline 2 cannot be crossed into"):
        plan_lineage(parse_target("latest"), lineage(crossable=False))
