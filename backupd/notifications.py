"""Failure and success notifications: `[notify] on_failure` / `on_success` commands.

Services publish an `Event` (a snapshot run recorded, a drill finished); a watcher turns
status warnings that appear or clear into events too (binlog gaps at once, other alarms once
they have lasted `alarm_after_seconds`). One worker thread runs the commands from a bounded
queue, so `publish` never blocks a backup: a full queue drops the event (logged and counted),
a notifier running past `timeout_seconds` is killed with its whole process group, and its
output and exit status go to the log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from backupd.config import NotifySection
from backupd.log import get_logger
from backupd.metrics import PREFIX

_log = get_logger("notify")

SUCCESS = "success"
QUEUE_SIZE = 64
OUTPUT_LIMIT = 4096  # bytes of a notifier's output kept for the log
GAP_PREFIX = "binlog gap"


@dataclass(frozen=True)
class Event:
    """What happened; `result` "success" runs on_success, anything else on_failure."""

    event: str  # snapshot, drill, binlog_gap, alarm, alarm_cleared
    result: str  # success, failed, skipped, firing
    message: str  # one line for a person (a mail subject)
    set_id: str = ""
    error: str = ""
    error_code: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.result == SUCCESS

    def environment(self) -> dict[str, str]:
        """The BACKUPD_* variables a notifier gets (on top of the daemon's environment)."""
        values = {
            "EVENT": self.event,
            "RESULT": self.result,
            "MESSAGE": self.message,
            "SET_ID": self.set_id,
            "ERROR": self.error,
            "ERROR_CODE": self.error_code,
            "HOST": socket.gethostname(),
            "TIME": dt.datetime.fromtimestamp(self.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{key.upper(): value for key, value in self.extra.items()},
        }
        return {f"BACKUPD_{key}": value for key, value in values.items()}


class AlarmWatcher:
    """Turns the daemon's status warnings into alarm events, edge-triggered.

    A warning is keyed by its text before the first ':' (the detail may change while the
    cause stays), a binlog gap by its whole text (each gap is its own cause). Binlog gaps
    notify at once and once each; other alarms once they have
    lasted `hold` seconds, and `alarm_cleared` follows when every notified alarm is gone.
    """

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._since: dict[str, float] = {}
        self._notified: set[str] = set()

    def changes(self, warnings: list[str], now: float) -> list[Event]:
        current = {_alarm_key(text): text for text in warnings}
        for key in list(self._since):
            if key not in current:
                del self._since[key]
        events = []
        for key, text in current.items():
            since = self._since.setdefault(key, now)
            gap = text.startswith(GAP_PREFIX)
            if key in self._notified or (not gap and now - since < self.hold):
                continue
            self._notified.add(key)
            events.append(
                Event("binlog_gap" if gap else "alarm", "firing", text, error=text, at=now)
            )
        cleared = {key for key in self._notified if key not in current}
        self._notified -= cleared
        if cleared and not self._notified:
            events.append(
                Event(
                    "alarm_cleared",
                    SUCCESS,
                    "backupd alarms cleared: " + ", ".join(sorted(cleared)),
                    at=now,
                )
            )
        return events


def _alarm_key(warning: str) -> str:
    return warning if warning.startswith(GAP_PREFIX) else warning.partition(":")[0]


@dataclass(frozen=True)
class Outcome:
    result: str  # ok, failed, timeout, error
    returncode: int | None
    output: str


def run_notifier(argv: list[str], env: dict[str, str], timeout: float) -> Outcome:
    """Run one notifier in its own session; kill the whole group when it overruns."""
    try:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return Outcome("error", None, str(exc))
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            output, _ = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild left its own session holding the pipe
            output = b""
        return Outcome("timeout", process.returncode, _text(output))
    result = "ok" if process.returncode == 0 else "failed"
    return Outcome(result, process.returncode, _text(output))


def _text(output: bytes | None) -> str:
    return (output or b"")[-OUTPUT_LIMIT:].decode("utf-8", "replace").strip()


class Notifications:
    """The queue and its worker; `publish` is safe from any thread and never blocks."""

    POLL_SECONDS = 2.0

    def __init__(
        self,
        section: NotifySection,
        registry: CollectorRegistry,
        warnings: Callable[[], list[str]] | None = None,
    ) -> None:
        self.section = section
        self._warnings = warnings
        self._watcher = AlarmWatcher(section.alarm_after_seconds)
        self._queue: queue.Queue[Event | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.total = Counter(
            f"{PREFIX}_notifications",
            "Notifier runs by result (ok, failed, timeout, error, dropped)",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "failed", "timeout", "error", "dropped"):
            self.total.labels(result)

    def apply(self, section: NotifySection) -> None:
        """A reloaded [notify] takes effect for the next event."""
        self.section = section
        self._watcher.hold = section.alarm_after_seconds

    def publish(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.total.labels("dropped").inc()
            _log.error("notification dropped: queue full", kind=event.event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish what is queued (bounded by `timeout`), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=self.POLL_SECONDS)
            except queue.Empty:
                self._watch()
                continue
            if event is None:
                return
            self.deliver(event)

    def _watch(self) -> None:
        if self._warnings is None:
            return
        try:
            warnings = self._warnings()
        except Exception as exc:  # a status that cannot be built must not end notifications
            _log.error("cannot read status for alarm notifications", error=repr(exc))
            return
        for event in self._watcher.changes(warnings, time.time()):
            self.deliver(event)

    def deliver(self, event: Event) -> Outcome | None:
        """Run the command for this event, if one is configured; log and count the outcome."""
        section = self.section
        argv = section.on_success if event.ok else section.on_failure
        if not argv:
            return None
        env = {**os.environ, **event.environment()}
        outcome = run_notifier(list(argv), env, section.timeout_seconds)
        self.total.labels(outcome.result).inc()
        log = _log.info if outcome.result == "ok" else _log.warning
        log(
            "notifier finished",
            kind=event.event,
            result=event.result,
            command=argv[0],
            outcome=outcome.result,
            returncode=outcome.returncode,
            output=outcome.output,
        )
        return outcome
