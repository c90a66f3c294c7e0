"""--before / --skip resolved on synthetic binlogs, the replay split around skips, and the
undo preview's refusals (the parts that need no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupd.errors import UndoRefused, UsageError
from backupd.restore.around import Around, Located, TxRef, matches, parse_ref, split
from backupd.restore.endpoint import EndPoint, transactions
from backupd.restore.plan import Position, RestoreImpossible
from backupd.restore.replay import ReplayRange
from backupd.restore.undo import Found, _extract
from backupd.restore_target import CoordinateTarget, GtidTarget, LatestTarget
from tests.binlog_fakes import FakeFile, Txn
from tests.unit.test_restore_endpoint import start_of

F1, F2 = "mysql-bin.000001", "mysql-bin.000002"


@pytest.fixture
def fakes(tmp_path: Path) -> tuple[list[Path], FakeFile, FakeFile]:
    """F1: seq 1..3, rotate; F2: seq 4 (rows), seq 5 (DDL). The snapshot ends after seq 1."""
    first = FakeFile(F1)
    for _ in range(3):
        first.transaction(Txn([40]))
    first.rotate(F2)
    second = FakeFile(F2)
    second.seq = 3
    second.transaction(Txn([40]))
    second.transaction(Txn([], ddl=True))
    paths = []
    for fake in (first, second):
        paths.append(tmp_path / fake.name)
        paths[-1].write_bytes(bytes(fake.data))
    return paths, first, second


def test_refs_are_a_gtid_or_a_coordinate() -> None:
    assert parse_ref("0-1-42", "--skip") == GtidTarget("0-1-42", 0, 1, 42)
    assert parse_ref("mysql-bin.000002:300", "--before") == CoordinateTarget(F2, 300)
    for bad in ("latest", "2026-11-26T10:15:00Z", "nonsense"):
        with pytest.raises(UsageError, match="expected a GTID"):
            parse_ref(bad, "--skip")


def resolve(
    around: Around, fakes: tuple[list[Path], FakeFile, FakeFile]
) -> tuple[EndPoint, tuple[Located, ...]]:
    paths, first, _ = fakes
    return around.resolve(paths, start_of(first), "0-1-1", LatestTarget(), "mariadb", last=True)


def test_before_stops_at_the_end_of_the_transaction_before(
    fakes: tuple[list[Path], FakeFile, FakeFile],
) -> None:
    end, skipped = resolve(Around(before=GtidTarget("0-1-3", 0, 1, 3)), fakes)
    assert (end.gtid, end.transactions, end.gtid_state, skipped) == ("0-1-2", 1, "0-1-2", ())
    end, _ = resolve(Around(before=GtidTarget("0-1-2", 0, 1, 2)), fakes)
    assert end.transactions == 0 and end.position == start_of(fakes[1])
    second = fakes[2]
    gtid_event = second.events[1][0]  # after the format description: seq 4 starts here
    end, _ = resolve(Around(before=CoordinateTarget(F2, gtid_event)), fakes)
    assert end.gtid == "0-1-3" and end.position.file == F1


def test_before_an_unknown_transaction_is_refused(
    fakes: tuple[list[Path], FakeFile, FakeFile],
) -> None:
    with pytest.raises(RestoreImpossible, match="has this GTID"):
        resolve(Around(before=GtidTarget("0-1-9", 0, 1, 9)), fakes)
    with pytest.raises(RestoreImpossible, match="already contains it: name it by its coord"):
        resolve(Around(before=GtidTarget("0-1-1", 0, 1, 1)), fakes)  # the snapshot's last
    second = fakes[2]
    seq4, seq5 = second.events[1][0], second.events[4][0]  # GTID, rows, XID, then seq 5
    near = f"starts there; the nearest transactions start at {F2}:{seq4} and {F2}:{seq5}"
    with pytest.raises(RestoreImpossible, match=near):
        resolve(Around(before=CoordinateTarget(F2, seq4 + 1)), fakes)


def test_skips_leave_the_end_and_count_only_what_is_replayed(
    fakes: tuple[list[Path], FakeFile, FakeFile],
) -> None:
    whole, _ = resolve(Around(), fakes)
    end, skipped = resolve(Around(skips=(GtidTarget("0-1-3", 0, 1, 3),)), fakes)
    assert end.position == whole.position and end.transactions == whole.transactions - 1
    assert end.gtid_state == "0-1-5" and [s.gtid for s in skipped] == ["0-1-3"]
    end, skipped = resolve(Around(skips=(GtidTarget("0-1-5", 0, 1, 5),)), fakes)
    assert end.position == whole.position and end.gtid_state == "0-1-4"
    around = Around(skips=(GtidTarget("0-1-5", 0, 1, 5), GtidTarget("0-1-8", 0, 1, 8)))
    with pytest.raises(RestoreImpossible, match="--skip 0-1-8: not among"):
        around.check_found(skipped, start_of(fakes[1]), end)


def test_split_replays_around_each_skip(tmp_path: Path) -> None:
    files = [tmp_path / F1, tmp_path / F2]
    whole = ReplayRange(files, 400, 900)

    def gap(start: tuple[str, int], end: tuple[str, int]) -> Located:
        return Located("x", Position(*start), Position(*end), "", 0)

    pieces = split(whole, [gap((F1, 500), (F1, 600)), gap((F2, 300), (F2, 350))])
    assert [(p.files, p.start_position, p.stop_position) for p in pieces] == [
        ([files[0]], 400, 500),
        (files, 600, 300),
        ([files[1]], 350, 900),
    ]
    assert [
        (p.start_position, p.stop_position) for p in split(whole, [gap((F1, 400), (F1, 450))])
    ] == [(450, 900)]
    assert split(whole, [gap((F2, 800), (F2, 900))])[-1].stop_position == 800
    assert split(ReplayRange(files, 400), [gap((F1, 400), (F2, 900))])[0].stop_position is None


def _locate(path: Path, ref: TxRef) -> tuple[Found, bytes, bytes] | None:
    """What undo extracts from the file's transaction named `ref` (None: not in it)."""
    tx = next((t for t in transactions([path], Position(path.name, 4)) if matches(t, ref)), None)
    return None if tx is None else _extract(path, tx, ref)


def test_undo_refuses_ddl_and_mysql(
    fakes: tuple[list[Path], FakeFile, FakeFile], tmp_path: Path
) -> None:
    paths, _, _ = fakes
    located = _locate(paths[1], GtidTarget("0-1-4", 0, 1, 4))
    assert located is not None and located[0].where.gtid == "0-1-4"
    assert _locate(paths[1], GtidTarget("0-1-2", 0, 1, 2)) is None  # not in this file
    with pytest.raises(UndoRefused, match="DDL"):
        _locate(paths[1], GtidTarget("0-1-5", 0, 1, 5))
    mysql = FakeFile("binlog.000001", mysql=True)
    mysql.mysql_transaction([40])
    path = tmp_path / mysql.name
    path.write_bytes(bytes(mysql.data))
    start = mysql.events[2][0]  # after the format description and the previous GTIDs
    with pytest.raises(UndoRefused, match="MySQL"):
        _locate(path, CoordinateTarget(mysql.name, start))
