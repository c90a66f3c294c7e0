"""In-memory stand-ins for the snapshot safety core (CommitLock, Freezer, SnapshotProvider):
each writes what happened to one shared journal, so a unit test can assert the order."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from backupd.config import MysqlSection
from backupd.database import ServerVersion
from backupd.errors import FreezeFailed, LockFailed
from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot
from backupd.snapshot.dblock import LockedState
from backupd.snapshot.long_queries import LongQuery
from backupd.snapshot.protocols import FreezerFactory, LockFactory
from backupd.snapshot.providers.base import Target


@dataclass
class Journal:
    """What the fakes did, in order, and an event for "the lock was released from outside"."""

    steps: list[str] = field(default_factory=list)
    aborted: threading.Event = field(default_factory=threading.Event)

    def add(self, step: str) -> None:
        self.steps.append(step)

    def index(self, step: str) -> int:
        return self.steps.index(step)


class FakeLock:
    """A CommitLock: `lock_error` makes lock() fail; abort() sets `journal.aborted`."""

    def __init__(self, journal: Journal, lock_error: bool = False) -> None:
        self.journal = journal
        self.lock_error = lock_error
        self.version = ServerVersion.parse("10.11.9-MariaDB")
        self.locked = False

    def long_queries(self, older_than: float) -> list[LongQuery]:
        return []

    def kill_query(self, query: LongQuery) -> bool:
        self.journal.add(f"kill {query.thread_id}")
        return True

    def flush_tables(self) -> None:
        self.journal.add("flush")

    def prepare(self) -> None:
        self.journal.add("prepare lock")

    def lock(self) -> LockedState:
        if self.lock_error:
            raise LockFailed(statement="BACKUP STAGE BLOCK_COMMIT", reason="fake")
        self.locked = True
        self.journal.add("lock")
        return LockedState("mysql-bin.000001:42", "0-1-7", time.time())

    def unlock(self) -> None:
        if self.locked:
            self.journal.add("unlock")
        self.locked = False

    def abort(self) -> None:
        self.journal.add("abort")
        self.locked = False
        self.journal.aborted.set()

    def close(self) -> None:
        self.journal.add("close")


class FakeFreezer:
    """A Freezer: `fail` makes the freeze fail; `watchdog_fires` reports the watchdog thawed."""

    def __init__(self, journal: Journal, fail: bool = False, watchdog_fires: bool = False) -> None:
        self.journal = journal
        self.fail = fail
        self.fires = watchdog_fires
        self.frozen_at = 0.0
        self.thawed_at = 0.0
        self.watchdog_fired = False
        self.thaw_failed = False
        self.warm_up_seconds = 0.0
        self.fifreeze_seconds = 0.0
        self.frozen = False

    @property
    def seconds(self) -> float:
        return self.thawed_at - self.frozen_at

    def prepare(self) -> None:
        self.journal.add("prepare")

    def warm_up(self) -> None:
        self.journal.add("warm up")

    def __enter__(self) -> FakeFreezer:
        if self.fail:
            raise FreezeFailed(mount="/fake", reason="not supported")
        self.frozen, self.frozen_at = True, 10.0
        self.journal.add("freeze")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.frozen:
            self.journal.add("thaw")
        self.frozen, self.thawed_at = False, 10.5

    def thaw_now(self) -> None:
        self.journal.add("thaw_now")
        self.frozen = False

    def close(self) -> None:
        self.watchdog_fired = self.fires
        self.journal.add("close freezer")


class FakeProvider:
    """A SnapshotProvider; `hang_until_aborted` answers only after the lock was released
    from outside (a late answer: the capture then finished after the deadline)."""

    name = "fake"

    def __init__(self, journal: Journal, hang_until_aborted: bool = False) -> None:
        self.journal = journal
        self.hang = hang_until_aborted
        self.tags: list[dict[str, str]] = []
        self.deleted: list[str] = []

    def prepare(self, mounts: list[str]) -> list[Target]:
        return [Target(mount, f"vol-{index}") for index, mount in enumerate(mounts)]

    def start(
        self, set_id: str, targets: list[Target], tags: dict[str, str], deadline: float
    ) -> list[VolumeSnapshot]:
        self.journal.add("start")
        self.tags.append(tags)
        if self.hang and not self.journal.aborted.wait(10):
            raise AssertionError("the deadline never released the lock")
        return [VolumeSnapshot(t.mount, t.volume, f"snap-{t.volume}") for t in targets]

    def wait(
        self,
        set_id: str,
        volumes: list[VolumeSnapshot],
        timeout: float,
        on_progress: object = None,
    ) -> list[VolumeSnapshot]:
        return volumes

    def delete(self, record: SnapshotSet) -> list[str]:
        self.journal.add("delete")
        self.deleted.append(record.set_id)
        return [v.snapshot_id for v in record.volumes]


def lock_factory(journal: Journal, **options: bool) -> LockFactory:
    def make(section: MysqlSection, lock_timeout_seconds: float) -> FakeLock:
        return FakeLock(journal, **options)

    return make


def freezer_factory(journal: Journal, **options: bool) -> FreezerFactory:
    def make(mounts: list[str], max_freeze_seconds: float, record: object = None) -> FakeFreezer:
        return FakeFreezer(journal, **options)

    return make
