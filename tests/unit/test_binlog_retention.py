"""Binlog retention as a table: archived files go only when every kept set starts later."""

from __future__ import annotations

import pytest

from backupd.binlog.retention import ArchivedFile, deletable
from backupd.snapshot.catalog import SnapshotSet


def kept(coordinate: str, server: str = "1") -> SnapshotSet:
    return SnapshotSet("s", "local", "h", "o", "0", coordinate=coordinate, server_identity=server)


FILES = [ArchivedFile("1", f"mysql-bin.{n:06d}") for n in (8, 9, 10, 11)] + [
    ArchivedFile("2", "mysql-bin.000001")
]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ([kept("mysql-bin.000010:4")], ["mysql-bin.000008", "mysql-bin.000009"]),
        ([kept("mysql-bin.000010:4"), kept("mysql-bin.000009:900")], ["mysql-bin.000008"]),
        ([kept("mysql-bin.000008:4")], []),
        ([], []),  # no kept set: nothing is deleted, ever
        ([kept("")], []),  # a set without a coordinate protects everything
        ([kept("mysql-bin.000011:4", server="2")], []),  # another server's set
    ],
)
def test_deletable(sets: list[SnapshotSet], expected: list[str]) -> None:
    assert [f.file for f in deletable(sets, FILES) if f.stream == "1"] == expected


def test_old_manifest_without_identity_counts_when_one_server_is_archived() -> None:
    files = [f for f in FILES if f.stream == "1"]
    assert [f.file for f in deletable([kept("mysql-bin.000009:4", server="")], files)] == [
        "mysql-bin.000008"
    ]
    assert deletable([kept("mysql-bin.000009:4", server="")], FILES) == []
