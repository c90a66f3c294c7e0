"""Periodic probes of the daemon's dependencies (database, repository) with backoff.

A failing dependency never stops the daemon: the probe records the error, exports it as a
metric, and retries with exponential backoff until it answers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from backupd.errors import BackupdError
from backupd.log import get_logger
from backupd.metrics import Metrics

T = TypeVar("T")


@dataclass(frozen=True)
class ProbeState(Generic[T]):
    up: bool
    value: T | None
    error: str
    checked_at: float
    since: float  # when `up` last changed

    def to_dict(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "error": self.error or None,
            "checked_at": self.checked_at or None,
            "since": self.since or None,
        }


def next_delay(interval: float, failures: int, max_delay: float) -> float:
    """Probe cadence: `interval` while healthy, doubling from 1 s after failures."""
    if failures == 0:
        return interval
    return float(min(max_delay, 2 ** (failures - 1)))


class Probe(Generic[T]):
    """Runs `check` in its own thread; `state` is the latest result, read without locking."""

    def __init__(
        self,
        name: str,
        check: Callable[[], T],
        metrics: Metrics,
        stop: threading.Event,
        interval: float = 5.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.name = name
        self.interval = interval
        self.max_backoff = max_backoff
        self._check = check
        self._metrics = metrics
        self._stop = stop
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{name}", daemon=True)
        self.state: ProbeState[T] = ProbeState(False, None, "not probed yet", 0.0, 0.0)
        self._log = get_logger(f"probe.{name}")

    def set_check(self, check: Callable[[], T]) -> None:
        """Swap the check (config reload) and probe again at once."""
        self._check = check
        self.wake()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._wake.set()
        self._thread.join(timeout)

    def probe_once(self) -> ProbeState[T]:
        now = time.time()
        try:
            value = self._check()
        except BackupdError as exc:
            return self._record(False, None, exc.message, now)
        except Exception as exc:  # a probe must never kill its thread
            return self._record(False, None, f"{type(exc).__name__}: {exc}", now)
        return self._record(True, value, "", now)

    def _record(self, up: bool, value: T | None, error: str, now: float) -> ProbeState[T]:
        previous = self.state
        since = previous.since if previous.up == up and previous.checked_at else now
        if previous.up != up or not previous.checked_at:
            if up:
                self._log.info("dependency up", dependency=self.name)
            else:
                self._log.warning("dependency down", dependency=self.name, error=error)
        self.state = ProbeState(up, value, error, now, since)
        self._metrics.up.labels(self.name).set(1 if up else 0)
        self._metrics.probe_timestamp.labels(self.name).set(now)
        if not up:
            self._metrics.probe_failures.labels(self.name).inc()
        return self.state

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            state = self.probe_once()
            failures = 0 if state.up else failures + 1
            self._wake.wait(next_delay(self.interval, failures, self.max_backoff))
            self._wake.clear()
