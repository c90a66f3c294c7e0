"""Key layout round trips, file chains, and where archiving resumes (pure tables)."""

from __future__ import annotations

import pytest

from backupd.binlog import layout
from backupd.binlog.extent import Extent
from backupd.binlog.service import lag_bytes
from backupd.binlog.state import Progress, Resume, resume_point

SHA = "ab" * 32


def seg(
    file: str, start: int, end: int, kind: str = "tx", gtids: tuple[str, str] = ("", "")
) -> layout.SegmentKey:
    extent = Extent(file, start, end, 1764150000, 1764150001, gtids[0], gtids[1], kind)
    return layout.SegmentKey("1", extent, SHA, SHA, "zst")


def test_segment_key_round_trip_and_example() -> None:
    key = seg("mysql-bin.000042", 0, 1234, "eof", ("0-1-4242", "0-1-4250"))
    assert key.key == (
        f"binlog/1/mysql-bin.000042/000000000000-000000001234_1764150000-1764150001_0-1-4242~0-1-4250_eof_"
        f"{SHA}_{SHA}.zst"
    )
    assert layout.parse_segment(key.key) == key
    assert layout.parse_segment("binlog/1/mysql-bin.000042/manifest.json") is None


def test_overlong_gtids_are_left_out_of_the_name() -> None:
    big = "4294967295-4294967295-18446744073709551615"
    key = seg("mysql-bin.000042", 0, 1234, "tx", (big, big))
    name = key.key.rsplit("/", 1)[1]
    assert len(name) <= 255
    parsed = layout.parse_segment(key.key)
    assert parsed is not None and parsed.first_gtid == "" and parsed.end == 1234


def test_gap_key_round_trip() -> None:
    gap = layout.GapKey("1", "mysql-bin.000003", 120, "mysql-bin.000005", 0)
    assert (
        gap.key == "binlog/1/gaps/mysql-bin.000003_000000000120_mysql-bin.000005_000000000000.json"
    )
    assert layout.parse_gap(gap.key) == gap


def test_chain_prefers_compacted_object_and_reports_holes() -> None:
    parts = [seg("f.000001", 0, 100), seg("f.000001", 100, 200), seg("f.000001", 0, 300, "eof")]
    found = layout.chain(parts)
    assert found is not None and found.closed and found.end == 300
    assert [s.end for s in found.segments] == [300]
    holed = layout.chain([seg("f.000001", 0, 100), seg("f.000001", 150, 200)])
    assert holed is not None and holed.end == 100 and holed.holes == ((100, 150),)


LOGS = [("mysql-bin.000003", 500), ("mysql-bin.000004", 900)]


@pytest.mark.parametrize(
    ("archived", "logs", "expected"),
    [
        ([], LOGS, Resume("mysql-bin.000003", 4)),
        ([("mysql-bin.000003", 0, 200, "tx")], LOGS, Resume("mysql-bin.000003", 200)),
        (
            [("mysql-bin.000003", 0, 200, "mid")],
            LOGS,
            Resume("mysql-bin.000003", 200, inside_transaction=True),
        ),
        (
            [("mysql-bin.000003", 0, 200, "tx"), ("mysql-bin.000003", 200, 500, "eof")],
            LOGS,
            Resume("mysql-bin.000004", 4),
        ),
        ([("mysql-bin.000004", 0, 900, "eof")], LOGS, Resume("mysql-bin.000004", 900)),
        (
            [("mysql-bin.000001", 0, 300, "tx")],
            LOGS,
            Resume(
                "mysql-bin.000003",
                4,
                layout.GapKey("1", "mysql-bin.000001", 300, "mysql-bin.000003", 0),
            ),
        ),
        (
            [("mysql-bin.000001", 0, 300, "eof")],
            LOGS,
            Resume(
                "mysql-bin.000003",
                4,
                layout.GapKey("1", "mysql-bin.000002", 0, "mysql-bin.000003", 0),
            ),
        ),
        (
            [("mysql-bin.000003", 0, 600, "tx")],  # the server lost the tail (crash)
            LOGS,
            Resume(
                "mysql-bin.000004",
                4,
                layout.GapKey("1", "mysql-bin.000003", 600, "mysql-bin.000004", 0),
            ),
        ),
    ],
)
def test_resume_point(
    archived: list[tuple[str, int, int, str]], logs: list[tuple[str, int]], expected: Resume
) -> None:
    keys = [seg(file, start, end, kind) for file, start, end, kind in archived]
    assert resume_point("1", keys, logs) == expected


def test_progress_advances_only_over_contiguous_uploads() -> None:
    progress = Progress()
    progress.restore("f.1", 100)
    progress.queued("f.1", 100, 200, 5)
    progress.queued("f.1", 200, 300, 6)
    progress.queued("f.1", 300, 300, 6)  # an empty eof marker
    assert not progress.uploaded("f.1", 200, 300)
    assert progress.coordinate() == "f.1:100"
    assert progress.uploaded("f.1", 100, 200)
    assert progress.coordinate() == "f.1:300" and progress.pending == 1
    assert progress.uploaded("f.1", 300, 300) and progress.pending == 0
    assert progress.recovery_point() == 6


def test_lag_bytes() -> None:
    assert lag_bytes(LOGS, "mysql-bin.000003", 400) == 100 + 900
    assert lag_bytes(LOGS, "mysql-bin.000004", 900) == 0
    assert lag_bytes(LOGS, "mysql-bin.000001", 4) is None


def test_chain_accepts_a_repeated_empty_eof_marker() -> None:
    parts = [
        seg("f.000002", 0, 100),
        seg("f.000002", 100, 180, "eof"),
        seg("f.000002", 180, 180, "eof"),
    ]
    found = layout.chain(parts)
    assert found is not None and found.closed and found.end == 180 and not found.holes
