"""What the coordinator needs from the commit lock and the freezer, as protocols, so its
orderings (deadline, freeze failure, watchdog) can be tested with in-memory fakes.

The real parts are `dblock.DatabaseLock` and `freezer.FrozenMounts`.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol

from backupd.config import MysqlSection
from backupd.database import ServerVersion
from backupd.snapshot.dblock import LockedState
from backupd.snapshot.long_queries import LongQuery


class CommitLock(Protocol):
    """Blocks commits on its own session; dropping the session drops the lock."""

    version: ServerVersion

    def long_queries(self, older_than: float) -> list[LongQuery]: ...

    def kill_query(self, query: LongQuery) -> bool:
        """Kill that very statement (by its id), not whatever its thread runs now; False
        when it already ended."""

    def flush_tables(self) -> None: ...

    def prepare(self) -> None:
        """Whatever the lock needs besides the lock itself (the releasing session), done
        before commits are blocked."""

    def lock(self) -> LockedState:
        """Block commits; return the binlog coordinate and GTID state they stopped at."""

    def unlock(self) -> None: ...

    def abort(self) -> None:
        """From another thread: release the lock now, without the lock's own session."""

    def close(self) -> None: ...


class Freezer(Protocol):
    """prepare() and warm_up() before the lock; `with` freezes and always thaws; close() after
    the unlock."""

    frozen_at: float
    thawed_at: float
    watchdog_fired: bool
    thaw_failed: bool  # ours or the watchdog's FITHAW failed: a mount may still be frozen
    warm_up_seconds: float
    fifreeze_seconds: float  # the FIFREEZE calls under the lock

    @property
    def seconds(self) -> float: ...

    def prepare(self) -> None: ...

    def warm_up(self) -> None:
        """Right before the lock: freeze and thaw once, so the freeze under the lock is
        quick; leaves nothing frozen (a mount it cannot freeze is left to `with`)."""

    def __enter__(self) -> Freezer: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def thaw_now(self) -> None:
        """From another thread: thaw everything now; nothing more is frozen afterwards."""

    def close(self) -> None: ...


class LockFactory(Protocol):
    def __call__(self, section: MysqlSection, lock_timeout_seconds: float) -> CommitLock: ...


class FreezerFactory(Protocol):
    def __call__(
        self, mounts: list[str], max_freeze_seconds: float, record: Path | None = None
    ) -> Freezer: ...
