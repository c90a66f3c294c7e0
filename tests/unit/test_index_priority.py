"""The change index worker takes idle CPU time only, is lifted when it falls behind, and
never makes the spool wait (index_priority, index_stage); with a real worker process."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.binlog.extent import Extent
from backupd.binlog.index_priority import WorkerPriority
from backupd.binlog.index_stage import IndexStage
from backupd.binlog.spool import SpoolEntry


def test_the_worker_is_lifted_once_behind_and_dropped_once_level() -> None:
    calls: list[tuple[int, bool]] = []
    priority = WorkerPriority(5.0, lambda pid, idle: calls.append((pid, idle)))
    priority.waiting(10.0)  # no worker yet: nothing to lift
    priority.worker_started(42)
    priority.waiting(4.9)
    assert calls == []
    priority.waiting(5.0)
    priority.waiting(6.0)  # lifted already
    assert calls == [(42, False)] and priority.lifted
    priority.caught_up()
    priority.caught_up()
    assert calls == [(42, False), (42, True)] and not priority.lifted


def test_a_refused_change_is_not_retried_until_a_new_worker() -> None:
    calls: list[int] = []

    def refuse(pid: int, idle: bool) -> None:
        calls.append(pid)
        raise PermissionError("EPERM")

    priority = WorkerPriority(1.0, refuse)
    priority.worker_started(7)
    priority.waiting(2.0)
    priority.waiting(3.0)
    assert calls == [7] and not priority.lifted
    priority.worker_started(8)
    priority.waiting(2.0)
    assert calls == [7, 8]


def test_a_killed_worker_is_not_dropped_back() -> None:
    calls: list[tuple[int, bool]] = []
    priority = WorkerPriority(1.0, lambda pid, idle: calls.append((pid, idle)))
    priority.worker_started(5)
    priority.waiting(2.0)
    priority.worker_gone()  # killed while lifted: nothing to call on a dead pid
    priority.caught_up()
    priority.waiting(9.0)
    assert calls == [(5, False)] and not priority.lifted


class Recorder:
    def __init__(self) -> None:
        self.removed: list[SpoolEntry] = []
        self.unindexed: list[str] = []
        self.removed_event = threading.Event()

    def remove(self, entry: SpoolEntry) -> None:
        self.removed.append(entry)
        self.removed_event.set()


@pytest.fixture()
def stage(tmp_path: Path) -> Iterator[tuple[IndexStage, Recorder, threading.Event]]:
    """A stage with a real worker process; `pressure` is an event the test sets."""
    recorder = Recorder()
    pressure = threading.Event()
    stop = threading.Event()
    pending = tmp_path / "pending"
    pending.mkdir()
    stage = IndexStage(
        submit=lambda entry: True,
        remove=recorder.remove,
        stream=lambda: "s1",
        pending_dir=pending,
        stop=stop,
        catch_up_seconds=3600.0,
        pressure=pressure.is_set,
        unindexed=recorder.unindexed.append,
    )
    stage.start()
    try:
        yield stage, recorder, pressure
    finally:
        stop.set()
        stage.join(5)


def test_the_worker_runs_on_idle_time_and_can_be_lifted(
    stage: tuple[IndexStage, Recorder, threading.Event],
) -> None:
    indexing, _, _ = stage
    pid = indexing.priority.pid
    assert pid is not None and pid != os.getpid()
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    assert os.getpriority(os.PRIO_PROCESS, pid) == 10
    indexing.priority.waiting(indexing.priority.catch_up_seconds)
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, pid) == 10  # nice 10, never above
    indexing.priority.caught_up()
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE


def test_a_full_spool_stops_waiting_for_an_index(
    stage: tuple[IndexStage, Recorder, threading.Event], tmp_path: Path
) -> None:
    """The worker blocks on a FIFO (a segment it cannot finish): with the spool over half
    full, the stored segment leaves the spool unindexed instead of holding the reader."""
    indexing, recorder, pressure = stage
    fifo = tmp_path / "mysql-bin.000001__000000000004-000000000100.seg"
    os.mkfifo(fifo)
    entry = SpoolEntry(fifo, Extent("mysql-bin.000001", 4, 100, 0, 0, "", "", "tx"))
    pid = indexing.priority.pid
    assert indexing.submit(entry)
    indexing.uploaded(entry)
    assert not recorder.removed_event.wait(0.3)  # waits for its index meanwhile
    assert indexing.lag() > 0
    pressure.set()
    assert recorder.removed_event.wait(10)
    assert recorder.removed == [entry] and recorder.unindexed == ["spool_pressure"]
    assert indexing.lag() == 0
    assert not any((tmp_path / "pending").iterdir())
    assert not _alive(pid)  # killed: the next segment gets a new worker


def _alive(pid: int | None) -> bool:
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
