"""The coordinator's orderings with in-memory fakes (tests/snapshot_fakes.py): what happens,
in which order, when the deadline passes, the freeze fails or the watchdog fired."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from backupd.config import Config
from backupd.snapshot.catalog import Catalog, SnapshotSet
from backupd.snapshot.coordinator import Coordinator
from backupd.snapshot.deadline import LockDeadline
from backupd.storage.filestore import FileStore
from tests.snapshot_fakes import FakeProvider, Journal, freezer_factory, lock_factory

MOUNT = "/proc"  # a real mount point the run-time check accepts; the fake never freezes it


def config(tmp_path: Path, **snapshot: Any) -> Config:
    return Config.model_validate(
        {
            "daemon": {"state_dir": str(tmp_path / "state"), "spool_dir": str(tmp_path / "s")},
            "storage": {"url": f"file://{tmp_path / 'repo'}"},
            "snapshot": {"mounts": [MOUNT], "lock_retry_delay_seconds": 0, **snapshot},
        }
    )


def run(
    tmp_path: Path,
    journal: Journal,
    provider: FakeProvider,
    lock: dict[str, bool] | None = None,
    freezer: dict[str, bool] | None = None,
    **snapshot: Any,
) -> SnapshotSet:
    coordinator = Coordinator(
        config(tmp_path, **snapshot),
        provider,
        Catalog(FileStore(tmp_path / "repo")),
        "owner",
        threading.Event(),
        lock_factory=lock_factory(journal, **(lock or {})),
        freezer_factory=freezer_factory(journal, **(freezer or {})),
    )
    return coordinator.run("set-1", "manual")


def before(journal: Journal, *steps: str) -> bool:
    return [journal.index(step) for step in steps] == sorted(journal.index(s) for s in steps)


def test_a_normal_run_freezes_inside_the_lock_and_thaws_before_unlocking(tmp_path: Path) -> None:
    journal = Journal()
    record = run(tmp_path, journal, FakeProvider(journal))
    assert record.state == "completed" and record.attempts == 1, record
    assert journal.steps == [
        "flush",
        "prepare",
        "prepare lock",
        "warm up",
        "lock",
        "freeze",
        "start",
        "thaw",
        "unlock",
        "close",
        "close freezer",
    ]


def test_deadline_hit_releases_the_lock_thaws_and_discards_the_set(tmp_path: Path) -> None:
    journal = Journal()
    provider = FakeProvider(journal, hang_until_aborted=True)
    record = run(tmp_path, journal, provider, max_freeze_seconds=0.2, lock_attempts=1)
    assert record.state == "failed" and record.error_code == "lock_deadline_exceeded", record
    assert "provider's start call" in record.error
    assert before(journal, "lock", "freeze", "start", "thaw_now", "abort", "close", "delete")
    assert "unlock" not in journal.steps  # the session was killed: nothing left to unlock
    # until the deadline's release, recorded on failure (the budget counts from the warm-up
    # just before the lock, so the lock itself is held a few ms less than 0.2 s on a busy host)
    assert 0.15 <= record.lock_seconds < 5
    assert provider.deleted == ["set-1"] and record.volumes == []
    assert Catalog(FileStore(tmp_path / "repo")).get("set-1").state == "failed"


def test_deadline_hit_is_retried_with_a_fresh_lock(tmp_path: Path) -> None:
    journal = Journal()
    provider = FakeProvider(journal, hang_until_aborted=True)  # answers at once once aborted
    record = run(tmp_path, journal, provider, max_freeze_seconds=0.2, lock_attempts=2)
    assert record.state == "completed" and record.attempts == 2, record
    assert record.attempt_errors[0].startswith("lock_deadline_exceeded: ")
    assert journal.steps.count("lock") == 2 and journal.steps.count("close") == 2
    assert journal.index("delete") < journal.steps.index("lock", journal.index("abort"))


def test_lock_failures_are_retried_up_to_lock_attempts(tmp_path: Path) -> None:
    journal = Journal()
    record = run(tmp_path, journal, FakeProvider(journal), {"lock_error": True}, lock_attempts=3)
    assert record.state == "failed" and record.error_code == "lock_failed"
    assert record.attempts == 3 and len(record.attempt_errors) == 2
    assert "freeze" not in journal.steps and journal.steps.count("close") == 3


def test_freeze_failure_takes_a_crash_consistent_set_tagged_so(tmp_path: Path) -> None:
    journal = Journal()
    provider = FakeProvider(journal)
    record = run(
        tmp_path, journal, provider, freezer={"fail": True}, crash_consistent_fallback=True
    )
    assert record.state == "completed" and record.consistency == "crash", record
    assert provider.tags[-1]["backupd:consistency"] == "crash"
    assert before(journal, "lock", "start", "unlock") and "freeze" not in journal.steps


def test_freeze_failure_without_fallback_fails_before_the_provider(tmp_path: Path) -> None:
    journal = Journal()
    record = run(tmp_path, journal, FakeProvider(journal), freezer={"fail": True})
    assert record.state == "failed" and record.error_code == "freeze_failed"
    assert "start" not in journal.steps and before(journal, "lock", "unlock", "close")


def test_watchdog_fired_deletes_the_set(tmp_path: Path) -> None:
    journal = Journal()
    provider = FakeProvider(journal)
    record = run(tmp_path, journal, provider, freezer={"watchdog_fires": True})
    assert record.state == "failed" and record.error_code == "freeze_failed"
    assert "watchdog thawed" in record.error
    assert before(journal, "start", "thaw", "unlock", "close freezer", "delete")
    assert provider.deleted == ["set-1"]


@pytest.mark.parametrize("capture_first", [True, False])
def test_deadline_and_capture_decide_once(capture_first: bool) -> None:
    """Exactly one of "captured in time" and "missed" holds, whichever came first."""
    deadline = LockDeadline(0.05 if not capture_first else 60)
    fired = threading.Event()
    deadline.start([fired.set])
    if capture_first:
        assert deadline.captured()
    else:
        assert fired.wait(5)
        assert not deadline.captured()
    deadline.cancel()
    assert deadline.missed is not capture_first
