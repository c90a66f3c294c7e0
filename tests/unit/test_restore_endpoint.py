"""The exact end point, resolved from synthetic binlog files: boundaries, refusals, GTID state."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupd.restore.endpoint import Boundary, _check_monotonic, resolve
from backupd.restore.plan import Position, RestoreImpossible
from backupd.restore_target import TimeTarget, parse_target
from tests.binlog_fakes import FakeFile, Txn

T0 = 1_700_000_000


@pytest.fixture
def files(tmp_path: Path) -> tuple[list[Path], FakeFile, FakeFile]:
    """F1: seq 1..3 (times T0+1..T0+3), rotate; F2: seq 4 (rows), seq 5 (DDL)."""
    first = FakeFile("mysql-bin.000001", T0)
    for _ in range(3):
        first.transaction(Txn([40]))
    first.rotate("mysql-bin.000002")
    second = FakeFile("mysql-bin.000002", T0 + 3)
    second.seq = 3
    second.transaction(Txn([40]))
    second.transaction(Txn([], ddl=True))
    paths = []
    for fake in (first, second):
        path = tmp_path / fake.name
        path.write_bytes(bytes(fake.data))
        paths.append(path)
    return paths, first, second


def ends(fake: FakeFile) -> list[int]:
    return sorted(fake.boundaries)


def start_of(first: FakeFile) -> Position:
    return Position(first.name, ends(first)[1])  # after seq 1: the snapshot's coordinate


def iso(ts: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@pytest.mark.parametrize(
    ("target", "gtid", "transactions"),
    [
        ("latest", "0-1-5", 4),
        ("0-1-3", "0-1-3", 2),
        ("0-1-4", "0-1-4", 3),
        ("0-1-1", "", 0),  # the snapshot already ends with it
        (iso(T0 + 2), "0-1-2", 1),
        (iso(T0 + 4), "0-1-4", 3),
    ],
)
def test_end_points(
    files: tuple[list[Path], FakeFile, FakeFile], target: str, gtid: str, transactions: int
) -> None:
    paths, first, _second = files
    end = resolve(paths, start_of(first), "0-1-1", parse_target(target), "mariadb")
    assert end.gtid == gtid and end.transactions == transactions
    assert end.gtid_state == (gtid or "0-1-1")


def test_coordinate_must_be_a_boundary(files: tuple[list[Path], FakeFile, FakeFile]) -> None:
    paths, first, second = files
    boundary = ends(second)[1]
    end = resolve(
        paths, start_of(first), "0-1-1", parse_target(f"{second.name}:{boundary}"), "mariadb"
    )
    assert end.gtid == "0-1-4" and end.position == Position(second.name, boundary)
    with pytest.raises(RestoreImpossible, match=f"nearest are {second.name}:{boundary}"):
        resolve(
            paths,
            start_of(first),
            "0-1-1",
            parse_target(f"{second.name}:{boundary + 3}"),
            "mariadb",
        )


def test_ddl_after_the_last_rows_lowers_the_floor(
    files: tuple[list[Path], FakeFile, FakeFile],
) -> None:
    paths, first, _second = files
    end = resolve(paths, start_of(first), "0-1-1", parse_target("latest"), "mariadb")
    assert end.gtid_state == "0-1-5" and end.gtid_floor == "0-1-4"


@pytest.mark.parametrize(
    ("target", "flavor", "message"),
    [
        (iso(T0 + 99), "mariadb", "after the last complete archived transaction"),
        ("0-1-42", "mariadb", "GTID 0-1-42 is not among"),
        ("3e11fa47-71ca-11e1-9e33-c80aa9429562:5", "mariadb", "MySQL GTID, but the archive"),
        ("0-1-3", "mysql", "MariaDB GTID, but the archive was written by mysql"),
    ],
)
def test_refusals(
    files: tuple[list[Path], FakeFile, FakeFile], target: str, flavor: str, message: str
) -> None:
    paths, first, _second = files
    with pytest.raises(RestoreImpossible, match=message):
        resolve(paths, start_of(first), "0-1-1", parse_target(target), flavor)


def test_time_targets_refuse_timestamps_that_go_backwards_before_them() -> None:
    def b(pos: int, ts: int) -> Boundary:
        return Boundary(Position("mysql-bin.000001", pos), "", ts)

    target = parse_target("2026-01-01T00:00:00Z")
    assert isinstance(target, TimeTarget)
    _check_monotonic([b(100, 10), b(200, 20), b(300, 20)], target)  # monotonic: fine
    _check_monotonic([b(100, 10), b(200, 5), b(300, 12)], target)  # resolved by a later one
    with pytest.raises(RestoreImpossible, match="go backwards"):
        _check_monotonic([b(100, 10), b(200, 5), b(300, 7)], target)
