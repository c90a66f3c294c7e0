"""The relay method's pure parts: which method a target gets and why, the server_id the
replay runs under, the event scan, and when the applier has reached the end point."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from backupd.errors import RelayUnavailable
from backupd.restore.relay import SlaveStatus, _Watcher
from backupd.restore.relay_layout import RelayFiles, free_server_id, relay_name, scan
from backupd.restore.relay_target import PIPE_BY_REQUEST, TargetFacts, decide, unfit
from backupd.restore.replay import Progress, ReplayFailed, ReplayRange
from tests.binlog_fakes import FakeFile, Txn

FIT = TargetFacts(
    version="10.11.19-MariaDB",
    datadir="/var/lib/mysql",
    local=True,
    datadir_writable=True,
    log_bin=True,
    log_slave_updates=True,
    slave_exec_mode="STRICT",
    slave_skip_errors="OFF",
    filters={"replicate_do_db": ""},
    running=[],
    non_transactional=0,
)


@pytest.mark.parametrize(
    ("change", "flavor", "reason"),
    [
        ({}, "mysql", "MariaDB only"),
        ({"version": "8.0.36"}, "", "MariaDB only"),
        ({"error": "Access denied"}, "mariadb", "refuses replication statements"),
        ({"local": False}, "mariadb", "does not run on this host"),
        ({"datadir_writable": False}, "mariadb", "not writable here"),
        ({"log_slave_updates": False}, "mariadb", "log_slave_updates is OFF"),
        ({"slave_exec_mode": "IDEMPOTENT"}, "mariadb", "slave_exec_mode is IDEMPOTENT"),
        ({"slave_skip_errors": "1062"}, "mariadb", "slave_skip_errors is 1062"),
        ({"filters": {"replicate_do_db": "app"}}, "mariadb", "replicate_do_db=app"),
        ({"running": ["(default)"]}, "mariadb", "replication is running"),
    ],
)
def test_each_unfit_target_is_named(change: dict[str, object], flavor: str, reason: str) -> None:
    facts = replace(FIT, **change)  # type: ignore[arg-type]
    assert reason in unfit(facts, flavor)
    auto = decide("auto", facts, flavor, 8)
    assert auto.name == "pipe" and reason in auto.why
    with pytest.raises(RelayUnavailable, match="--method pipe"):
        decide("relay", facts, flavor, 8)


def test_fit_target_gets_relay_and_its_parallel_mode() -> None:
    assert (
        unfit(FIT, "mariadb") == ""
        and unfit(replace(FIT, log_bin=False, log_slave_updates=False), "mariadb") == ""
    )
    method = decide("auto", FIT, "mariadb", 8)
    assert (method.name, method.workers, method.mode) == ("relay", 8, "optimistic")
    assert "/var/lib/mysql" in method.why
    myisam = decide("relay", replace(FIT, non_transactional=2), "mariadb", 4)
    assert myisam.mode == "conservative" and "2 non-transactional" in myisam.why
    assert decide("pipe", FIT, "mariadb", 8) is PIPE_BY_REQUEST
    assert method.to_dict() == {
        "name": "relay", "why": method.why, "workers": 8, "parallel_mode": "optimistic",
    }  # fmt: skip
    assert PIPE_BY_REQUEST.to_dict() == {"name": "pipe", "why": "asked for (--method pipe)"}


@pytest.mark.parametrize(
    ("current", "taken", "expected"),
    [(7, {1, 2}, 7), (1, {1}, 2), (1, {1, 5}, 6), (2**32 - 1, {2**32 - 1, 1}, 2)],
)
def test_the_replay_runs_under_an_id_no_event_carries(
    current: int, taken: set[int], expected: int
) -> None:
    assert free_server_id(current, frozenset(taken)) == expected


def test_scan_counts_events_after_the_start_and_collects_server_ids(tmp_path: Path) -> None:
    fake = FakeFile("mysql-bin.000001")
    fake.transaction(Txn([40]))
    start = len(fake.data)
    fake.transaction(Txn([41]))
    stop = len(fake.data)
    fake.transaction(Txn([42]))
    path = tmp_path / fake.name
    path.write_bytes(bytes(fake.data))
    every = [offset for offset, _raw in fake.events]
    scanned = scan(ReplayRange([path], start, stop))
    assert scanned.server_ids == frozenset({1})
    assert scanned.events == sum(1 for offset in every if start <= offset < stop)
    assert scan(ReplayRange([path], start)).events == sum(1 for o in every if o >= start)


def status(name: str, pos: int, running: bool = True) -> SlaveStatus:
    return SlaveStatus(name, pos, "mysql-bin.000009", pos, running, 0, "", "")


def test_the_end_is_the_group_position_in_the_last_file_or_past_it() -> None:
    base = "host-relay-bin-backupd_replay"
    files = RelayFiles(Path("/d"), base, "./", (relay_name(base, 1), relay_name(base, 2)),
                       (1000, 800))  # fmt: skip
    watcher = _Watcher(None, files, 400, 800, Progress(1400, time.monotonic()), 0, None, 1.0)  # type: ignore[arg-type]
    assert not watcher.reached(status(relay_name(base, 1), 1000))
    assert not watcher.reached(status(relay_name(base, 2), 799))
    assert watcher.reached(status(relay_name(base, 2), 800))
    assert watcher.reached(status(relay_name(base, 3), 4))  # moved on to the server's own log
    assert not watcher.reached(status("other-relay-bin.000009", 4))
    assert watcher.done_bytes(status(relay_name(base, 1), 400)) == 0
    assert watcher.done_bytes(status(relay_name(base, 2), 300)) == 900
    assert watcher.done_bytes(status(relay_name(base, 3), 4)) == 1400


class FakeSession:
    """SHOW SLAVE STATUS answers in turn (the last one repeats), and idle workers."""

    def __init__(self, *answers: SlaveStatus) -> None:
        self.answers = list(answers)

    def status(self) -> SlaveStatus:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def busy_workers(self) -> int:
        return 0


def watcher_on(session: FakeSession) -> _Watcher:
    base = "r-backupd_replay"
    files = RelayFiles(Path("/d"), base, "./", (relay_name(base, 1),), (900,))
    progress = Progress(500, time.monotonic())
    return _Watcher(session, files, 400, 900, progress, 0, None, 0.0)  # type: ignore[arg-type]


def test_the_watch_ends_at_the_end_point_and_counts_progress() -> None:
    name = relay_name("r-backupd_replay", 1)
    watcher = watcher_on(FakeSession(status(name, 400), status(name, 650), status(name, 900)))
    watcher.wait()
    assert watcher.progress.done_bytes == 250  # the last report before the end


def test_an_sql_error_fails_the_watch_with_the_servers_words() -> None:
    failed = replace(status(relay_name("r-backupd_replay", 1), 500, running=False),
                     errno=1062, error="Duplicate entry '2' for key 'PRIMARY'")  # fmt: skip
    with pytest.raises(ReplayFailed, match=r"error 1062 at relay log .*Duplicate entry '2'"):
        watcher_on(FakeSession(failed)).wait()


def test_a_thread_stopped_early_or_stalled_fails_the_watch() -> None:
    name = relay_name("r-backupd_replay", 1)
    with pytest.raises(ReplayFailed, match=r"stopped at relay log .*before the end point"):
        watcher_on(FakeSession(status(name, 500, running=False))).wait()
    stalled = replace(status(name, 500), state="Slave has read all relay log; waiting")
    watcher = watcher_on(FakeSession(stalled))
    watcher.stall_seconds = 0.0
    with pytest.raises(ReplayFailed, match="read every relay log but stays at"):
        watcher.wait()


def test_the_printed_plan_says_which_method_and_why() -> None:
    from backupd.restore.ctl import render_plan

    doc = {
        "server": "1", "target": "latest", "files": ["mysql-bin.000002"], "segments": ["k"],
        "snapshot": {"set_id": "s", "provider": "local", "coordinate": "mysql-bin.000002:4",
                     "gtid": ""},
        "end": {"coordinate": "mysql-bin.000002:900", "gtid": "0-1-9", "commit_time": 0,
                "transactions": 3, "gtid_state": "0-1-9"},
        "method": decide("auto", replace(FIT, local=False), "mariadb", 8).to_dict(),
    }  # fmt: skip
    assert "  method: pipe (relay not possible: the target server does not run on this host" in (
        render_plan(doc)
    )
    del doc["method"]  # `restore plan` has no target: no method line
    assert "method:" not in render_plan(doc)
