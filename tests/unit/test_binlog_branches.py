"""Which archived transactions belong to a timeline's history (backupd.binlog.branches)."""

from __future__ import annotations

import pytest

from backupd.binlog.archive import ArchiveView, History, Timeline
from backupd.binlog.branches import membership


def history(number: int, parent: int | None = None, **branch: str) -> Timeline:
    return Timeline(
        History(number, f"c/tl{number:06d}", "failover" if parent else "start", "7", 0.0,
                parent, **branch)
    )  # fmt: skip


# 1 <- 2 (crossable at mysql-bin.000002:500) <- 4 (not crossable, began at GTID 0-7-40);
# 3 is a sibling of 2 (another branch off 1)
VIEW = ArchiveView(
    "c",
    {
        1: history(1),
        2: history(2, 1, parent_end="mysql-bin.000002:500", child_start="mysql-bin.000001:4"),
        3: history(3, 1),
        4: history(4, 2, gtid="0-7-40,1-9-3"),
    },
    [],
)


@pytest.mark.parametrize(
    ("chosen", "timeline", "file", "pos", "gtid", "member"),
    [
        (2, 2, "mysql-bin.000009", 9999, "0-7-99", True),  # its own
        (2, 1, "mysql-bin.000002", 500, "0-7-20", True),  # ends at the branch point
        (2, 1, "mysql-bin.000001", 90000, "0-7-10", True),  # an earlier file
        (2, 1, "mysql-bin.000002", 501, "0-7-21", False),  # after it: abandoned
        (2, 1, "mysql-bin.000003", 4, "0-7-22", False),
        (2, 3, "mysql-bin.000001", 200, "0-7-5", False),  # a sibling branch
        (3, 2, "mysql-bin.000001", 200, "0-7-5", False),
        (4, 2, "mysql-bin.000001", 200, "0-7-41", False),  # past the child's GTID position
        (4, 2, "mysql-bin.000001", 200, "0-7-40", None),  # may be shared: not known
        (4, 2, "mysql-bin.000001", 200, "5-7-1", None),  # a domain the position lacks
        (4, 2, "mysql-bin.000001", 200, "", None),  # no GTID
        (4, 1, "mysql-bin.000002", 500, "0-7-20", True),  # 2's ancestor part is 4's too
        (4, 1, "mysql-bin.000002", 600, "0-7-21", False),
    ],
)
def test_membership(
    chosen: int, timeline: int, file: str, pos: int, gtid: str, member: bool | None
) -> None:
    found = membership(VIEW, chosen, timeline, file, pos, gtid)
    assert found.member is member, found
    assert bool(found.why) is (member is not True)


def test_an_archive_from_before_timelines_is_one_history() -> None:
    assert membership(None, 0, 0, "mysql-bin.000001", 4, "").member is True


def test_the_reason_names_the_branch_point() -> None:
    assert "mysql-bin.000002:500" in membership(VIEW, 2, 1, "mysql-bin.000002", 900, "").why
    assert "0-7-40" in membership(VIEW, 4, 2, "mysql-bin.000001", 1, "0-7-41").why
    assert "not known exactly" in membership(VIEW, 4, 2, "mysql-bin.000001", 1, "0-7-1").why
