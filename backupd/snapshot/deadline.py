"""One budget for the whole locked section: commit lock, freeze and the provider's start.

A timer thread, apart from the thread that makes the (possibly hung) provider call, runs the
release actions when the budget passes: thaw the mounts, then release the commit lock from
outside its session. The capture counts only if it finished before that; `captured()` and the
expiry decide this under one lock, so exactly one of them wins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from backupd.log import get_logger

_log = get_logger("snapshot")

JOIN_SECONDS = 30.0  # a release action bounds itself (timeouts); this only guards a bug


class LockDeadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.on_expiry: list[Callable[[], None]] = []
        self.phase: Callable[[], str] = str
        self.during = ""  # the run's phase when the budget passed
        self.released_at = 0.0  # time.time() when the release actions had run (0: never)
        self.at = 0.0  # time.monotonic() when the budget ends (0: not armed)
        self.expired = False  # the budget passed and the release actions ran (or run)
        self.capture_done = False  # the provider's start returned in time
        self._guard = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_expiry: list[Callable[[], None]], phase: Callable[[], str] = str) -> None:
        """Arm the clock; call right before the first statement that blocks commits."""
        self.on_expiry = on_expiry
        self.phase = phase
        self.at = time.monotonic() + self.seconds
        self._thread = threading.Thread(target=self._run, name="lock-deadline", daemon=True)
        self._thread.start()

    def captured(self) -> bool:
        """The capture finished; True when that was in time (the set may be kept)."""
        with self._guard:
            if not self.expired:
                self.capture_done = True
            return self.capture_done

    @property
    def missed(self) -> bool:
        """The budget passed before the capture finished: the set must be discarded."""
        return self.expired and not self.capture_done

    def cancel(self) -> None:
        """The locked section is over (thawed and unlocked); stop the clock."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)

    def _run(self) -> None:
        if self._cancel.wait(self.seconds):
            return
        with self._guard:
            self.expired = True
        self.during = self.phase()
        _log.warning(
            "lock deadline passed: thawing and releasing the commit lock", seconds=self.seconds
        )
        for action in self.on_expiry:
            try:
                action()
            except Exception as exc:  # the next action must still run
                _log.error(
                    "lock deadline: release action failed", action=str(action), error=str(exc)
                )
        self.released_at = time.time()
