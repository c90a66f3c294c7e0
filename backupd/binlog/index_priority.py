"""The change index worker's CPU priority: idle time only, unless it falls behind.

Indexing walks every event in Python, and on a small host that CPU is what the reader, the
server and the compressors need to keep the recovery point fresh. So the worker runs under
SCHED_IDLE: it gets a core only when nothing else wants one, and a burst of archiving is
not slowed by its index (bench/binlog_archive.py measures both). A host that stays busy may
never leave idle time, so once a segment has waited `catch_up_seconds` (the index flush
interval: by then `find` should see it) the worker is lifted to the normal policy at nice
10, a small share that cannot starve, and dropped back to idle once it has caught up.

Lifting needs RLIMIT_NICE of at least 10 (the unit's `LimitNICE=+10`) or CAP_SYS_NICE; where
the kernel refuses, the worker stays idle-only and the lag metric shows it.
"""

from __future__ import annotations

from collections.abc import Callable

from backupd.binlog.index_worker import set_policy
from backupd.log import get_logger

_log = get_logger("binlog.index")

SetPolicy = Callable[[int, bool], None]  # (pid, idle)


class WorkerPriority:
    """Lifts the worker when the oldest segment waiting for its index is too old; drops it
    back when nothing waits. Called from the stage's one writer thread."""

    def __init__(self, catch_up_seconds: float, setter: SetPolicy = set_policy) -> None:
        self.catch_up_seconds = catch_up_seconds
        self.pid: int | None = None
        self.lifted = False
        self._set = setter

    def worker_started(self, pid: int) -> None:
        """A new worker (it starts idle-only)."""
        self.pid, self.lifted = pid, False

    def worker_gone(self) -> None:
        """The worker was killed: nothing to lift or drop until the next one starts."""
        self.pid, self.lifted = None, False

    def waiting(self, seconds: float) -> None:
        """The oldest segment without its index has waited `seconds`."""
        if seconds >= self.catch_up_seconds and not self.lifted and self._apply(idle=False):
            self.lifted = True
            _log.info("change index behind: worker lifted to nice 10", waited=round(seconds, 1))

    def caught_up(self) -> None:
        """No segment waits for its index."""
        if self.lifted and self._apply(idle=True):
            self.lifted = False
            _log.info("change index caught up: worker back to idle time")

    def _apply(self, idle: bool) -> bool:
        if self.pid is None:
            return False
        try:
            self._set(self.pid, idle)
        except OSError as exc:  # no LimitNICE / CAP_SYS_NICE, or the worker is gone
            _log.warning("cannot change the change index worker's priority", error=str(exc))
            self.pid = None  # do not retry (and warn) every 50 ms; a new worker resets it
            return False
        return True
