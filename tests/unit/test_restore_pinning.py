"""Pinned restores in pieces: the restore record, the pinned plan, the position check per
flavor (against a fake client: there is no MySQL server on the bed) and the replay tools
chosen from the archive's flavor (their command lines, through stand-in executables)."""

from __future__ import annotations

import json
import os
import shlex
from argparse import Namespace
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from backupd.errors import TargetPositionMismatch, UsageError
from backupd.restore import apply as applying
from backupd.restore import position, repository
from backupd.restore import record as records
from backupd.restore.pinning import load_pin
from backupd.restore.replay import ReplayFailed, ReplayRange, ReplayServer, replay
from backupd.restore.tools import normal_gtid_set, tools_for
from backupd.restore_target import LatestTarget
from backupd.snapshot.catalog import COMPLETED, SnapshotSet
from tests.unit.test_restore_plan import ARCHIVE, SNAP_A, SNAP_B

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "4f22fa47-71ca-11e1-9e33-c80aa9429562"


def snapshot(**fields: Any) -> SnapshotSet:
    base = SnapshotSet(
        "20261201T010000Z-abc123", "local", "host", "owner", "0", state=COMPLETED,
        coordinate="mysql-bin.000007:1234", gtid="0-1-10,1-2-5", flavor="mariadb",
    )  # fmt: skip
    return replace(base, **fields)


# --- the record ---------------------------------------------------------------------------


def test_record_round_trip_and_replay_command(tmp_path: Path) -> None:
    made = records.RestoreRecord.of(snapshot(), "prod", 3, "1", "2026-12-01T00:30:00Z")
    path = tmp_path / "dest dir" / "x.restore.json"
    records.writable(path).parent.mkdir(exist_ok=True)
    made.write(path)
    assert records.load(path) == made
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    command = records.replay_command(made, path, "/run/r.sock", "cfg.toml")
    words = shlex.split(command)
    assert words[:3] == ["backupctl", "--config", str(Path("cfg.toml").resolve())]
    assert words[3:] == [
        "restore", "replay", "--record", str(path), "--to", "2026-12-01T00:30:00Z",
        "--target-socket", "/run/r.sock",
    ]  # fmt: skip
    crash = replace(made, consistency="crash")
    assert records.replay_command(crash, path, "/s").endswith("--allow-crash-consistent")


def test_record_refusals_and_lookup_by_set_id(tmp_path: Path) -> None:
    foreign = tmp_path / "other.json"
    foreign.write_text(json.dumps({"set_id": "x"}))
    with pytest.raises(UsageError, match="not a backupd restore record"):
        records.load(foreign)
    with pytest.raises(UsageError, match="cannot read"):
        records.load(tmp_path / "missing.json")
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"format": records.FORMAT, "set_id": "x"}))
    with pytest.raises(UsageError, match="incomplete"):
        records.load(incomplete)
    assert records.find("20261201T010000Z-abc123", "/var/lib/backupd") == Path(
        "/var/lib/backupd/restores/20261201T010000Z-abc123.json"
    )
    assert records.find(str(foreign), "/var/lib/backupd") == foreign


# --- the pinned plan -----------------------------------------------------------------------


def test_pinned_repository_plans_from_the_recorded_set_only() -> None:
    sets = {s: snapshot(set_id=s) for s in ("a", "b")}
    repo = repository.Repository(
        "1", "1", 0, "", sets, [SNAP_A, SNAP_B], list(ARCHIVE), {}, [], [], [], {0: "1"}
    )
    assert repository.plan(repo, LatestTarget()).snapshot.set_id == "b"  # newest wins...
    pinned = repository.pinned(repo, "a")
    assert repository.plan(pinned, LatestTarget()).snapshot.set_id == "a"  # ...unless pinned
    with pytest.raises(UsageError, match="pruned since"):
        repository.pinned(repo, "gone")


# --- the position check --------------------------------------------------------------------


class FakeServer:
    """Answers the client queries the position check makes, by the start of the SQL."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers

    def rows(self, _server: ReplayServer, sql: str, client: str = "") -> list[list[str]]:
        self.client = client
        for start, rows in self.answers.items():
            if sql.startswith(start):
                return rows
        raise AssertionError(f"unexpected query {sql}")

    def one(self, server: ReplayServer, sql: str, client: str = "") -> list[str]:
        return self.rows(server, sql, client)[0]


def check(answers: dict[str, list[list[str]]], snap: SnapshotSet) -> position.TargetPosition:
    fake = FakeServer(answers)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(position, "server_query", fake.one)
        patch.setattr(position, "server_rows", fake.rows)
        result = position.require_set_position(
            ReplayServer(socket="/s"), snap, tools_for(snap.flavor)
        )
    assert fake.client == tools_for(snap.flavor).client
    return result


MARIADB = [["10.11.6-MariaDB"]]


@pytest.mark.parametrize(
    ("binlog_pos", "slave_pos", "refused"),
    [
        ("1-2-5,0-1-10", "", ""),  # equal in another order: accepted
        ("0-1-10,1-2-5", "0-1-9", ""),  # replication applied less than the set: fine
        ("0-1-11,1-2-5", "", "GTID position 0-1-11,1-2-5"),  # replayed already / written to
        ("0-1-9,1-2-5", "", "GTID position 0-1-9,1-2-5"),  # an older set: would skip 0-1-10
        ("", "", "no GTID history"),  # binlog index not fixed: state lost
        ("0-1-10,1-2-5", "0-1-12", "already applied 0-1-12"),  # a relay-log apply ran
    ],
)
def test_mariadb_position(binlog_pos: str, slave_pos: str, refused: str) -> None:
    answers = {"SELECT VERSION": MARIADB, "SELECT @@GLOBAL.log_bin": [["1", binlog_pos, slave_pos]]}
    if not refused:
        assert check(answers, snapshot()).checked == "gtid_binlog_pos"
        return
    with pytest.raises(TargetPositionMismatch, match=refused) as caught:
        check(answers, snapshot())
    assert (
        "0-1-10,1-2-5" in caught.value.message and "20261201T010000Z-abc123" in caught.value.message
    )
    assert caught.value.code == "target_position_mismatch"


def test_mariadb_without_binlog_needs_the_slave_position() -> None:
    off = {"SELECT VERSION": MARIADB, "SELECT @@GLOBAL.log_bin": [["0", "", "0-1-10,1-2-5"]]}
    assert check(off, snapshot()).checked == "gtid_slave_pos"
    off["SELECT @@GLOBAL.log_bin"] = [["0", "", ""]]
    with pytest.raises(TargetPositionMismatch, match=r"without a binlog.*--log-bin"):
        check(off, snapshot())


def test_wrong_flavor_is_refused() -> None:
    answers = {"SELECT VERSION": [["8.0.36"]]}
    with pytest.raises(TargetPositionMismatch, match="a mysql server"):
        check(answers, snapshot())


MYSQL_SET = f"{UUID_A}:1-100,\n{UUID_B}:1-7"


def test_mysql_gtid_executed_compares_as_a_set() -> None:
    snap = snapshot(flavor="mysql", gtid=MYSQL_SET)
    same = f"{UUID_B.upper()}:1-7,\\n{UUID_A}:1-100"  # other order, case, escaped newline
    answers = {"SELECT VERSION": [["8.0.36"]], "SELECT @@GLOBAL.gtid_executed": [[same]]}
    assert check(answers, snap).position == f"{UUID_A}:1-100,{UUID_B}:1-7"
    answers["SELECT @@GLOBAL.gtid_executed"] = [[f"{UUID_A}:1-101,{UUID_B}:1-7"]]
    with pytest.raises(TargetPositionMismatch, match=f"{UUID_A}:1-101"):
        check(answers, snap)


@pytest.mark.parametrize(
    ("events", "refused"),
    [
        ({"mysql-bin.000007": [], "mysql-bin.000008": ["Format_desc", "Previous_gtids"]}, ""),
        ({"mysql-bin.000007": ["Query"], "mysql-bin.000008": []}, "mysql-bin.000007:"),
        ({"mysql-bin.000007": [], "mysql-bin.000008": ["Format_desc", "Gtid"]}, "000008:.*Gtid"),
    ],
)
def test_coordinate_check_without_gtids(events: dict[str, list[str]], refused: str) -> None:
    snap = snapshot(flavor="mysql", gtid="")
    answers = {
        "SELECT VERSION": [["8.0.36"]],
        "SELECT @@GLOBAL.log_bin": [["1"]],
        "SHOW BINARY LOGS": [["mysql-bin.000006", "9"], *([name, "9"] for name in events)],
    }
    for name, kinds in events.items():
        answers[f"SHOW BINLOG EVENTS IN '{name}'"] = [
            [name, str(1234 + i), kind, "1", "0", ""] for i, kind in enumerate(kinds)
        ]
    if not refused:
        assert check(answers, snap).checked == "binlog coordinate"
        return
    with pytest.raises(TargetPositionMismatch, match=refused):
        check(answers, snap)


def test_coordinate_check_needs_the_sets_file() -> None:
    snap = snapshot(flavor="mysql", gtid="")
    answers = {
        "SELECT VERSION": [["8.0.36"]],
        "SELECT @@GLOBAL.log_bin": [["1"]],
        "SHOW BINARY LOGS": [["binlog.000001", "9"]],
    }
    with pytest.raises(TargetPositionMismatch, match=r"mysql-bin\.000007 is not among them"):
        check(answers, snap)


# --- replay tools by flavor ----------------------------------------------------------------


def test_tools_by_flavor() -> None:
    assert (tools_for("mysql").binlog_tool, tools_for("mysql").client) == ("mysqlbinlog", "mysql")
    assert (tools_for("mariadb").binlog_tool, tools_for("mariadb").client) == (
        "mariadb-binlog",
        "mariadb",
    )
    assert tools_for("").flavor == "mariadb"  # manifests from before the flavor was recorded
    with pytest.raises(UsageError, match="unknown server flavor"):
        tools_for("postgres")
    assert normal_gtid_set(f" {UUID_B}:1-7 ,\n{UUID_A}:1-3") == f"{UUID_A}:1-3,{UUID_B}:1-7"


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`mysqlbinlog`, `mysql`, `mariadb-binlog` and `mariadb` that log their arguments; the
    binlog tools print one event marker, the clients read their input."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    for name in ("mysqlbinlog", "mariadb-binlog"):
        script = f'#!/bin/sh\necho "{name} $*" >> {log}\nprintf "# at 4\\n"\n'
        (bin_dir / name).write_text(script)
    for name in ("mysql", "mariadb"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\ncat > /dev/null\n')
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize(
    ("flavor", "binlog_tool", "client"),
    [("mysql", "mysqlbinlog", "mysql"), ("mariadb", "mariadb-binlog", "mariadb")],
)
def test_apply_runs_the_flavors_command_lines(
    flavor: str, binlog_tool: str, client: str, stand_ins: Path, tmp_path: Path
) -> None:
    binlog = tmp_path / "mysql-bin.000007"
    binlog.write_bytes(b"\xfebin" + bytes(300))
    ranges = [ReplayRange([binlog], 4, 200)]
    prepared: Any = SimpleNamespace(
        end=SimpleNamespace(transactions=1, gtid_state="", gtid_floor=""),
        snapshot=snapshot(flavor=flavor),
        replay_ranges=lambda: ranges,
    )
    server = ReplayServer(socket="/run/restored.sock", user="root")
    with pytest.MonkeyPatch.context() as patch:  # MariaDB asks the server afterwards
        patch.setattr(applying, "server_query", lambda *_a, **_k: ["0", ""])
        applying.apply(prepared, server)
    lines = stand_ins.read_text().splitlines()
    assert sorted(lines) == sorted(
        [
            f"{client} --socket=/run/restored.sock --user=root --binary-mode --batch",
            f"{binlog_tool} --start-position=4 --stop-position=200 {binlog}",
        ]
    )


def test_a_missing_flavor_tool_names_the_flavor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ReplayFailed, match=r"written by mysql.*mysql client tools"):
        tools_for("mysql").require()
    with pytest.raises(ReplayFailed):
        replay(ReplayRange([], 4), ReplayServer(socket="/s"), "mysqlbinlog", "mysql")


def test_an_unwritable_record_place_is_refused_before_any_volume(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot create"):
        records.writable(blocker / "restores" / "x.json")


def test_the_record_sets_cluster_timeline_and_server_defaults(tmp_path: Path) -> None:
    made = records.RestoreRecord.of(snapshot(), "prod", 3, "1", "latest")
    kept = records.writable(records.state_path(str(tmp_path), made.set_id))
    made.write(kept)
    config: Any = SimpleNamespace(daemon=SimpleNamespace(state_dir=str(tmp_path)))
    args = Namespace(record=made.set_id, cluster=None, timeline=None, server=None)
    assert load_pin(args, config) == made
    assert (args.cluster, args.timeline, args.server) == ("prod", 3, None)
    explicit = Namespace(record=made.set_id, cluster="other", timeline=2, server=None)
    load_pin(explicit, config)
    assert (explicit.cluster, explicit.timeline) == ("other", 2)  # what the operator says wins
    before_timelines = replace(made, cluster="", timeline=0)
    path = tmp_path / "old.json"
    before_timelines.write(path)
    old = Namespace(record=str(path), cluster=None, timeline=None, server=None)
    load_pin(old, config)
    assert (old.cluster, old.timeline, old.server) == (None, None, "1")
