"""The snapshot Service: one worker thread runs snapshot sets, one at a time, on request
(control API) or on schedule; status, warnings and metrics read what it records.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from backupd import freeze_record
from backupd.control.server import LongPoll, Request, Route
from backupd.errors import (
    PruneRefused,
    SnapshotInProgress,
    SnapshotNotFound,
    StorageError,
    UsageError,
)
from backupd.log import get_logger
from backupd.notifications import Event
from backupd.service import ServiceContext
from backupd.snapshot.catalog import (
    COMPLETED,
    FAILED,
    PENDING,
    Catalog,
    SnapshotSet,
    new_set_id,
)
from backupd.snapshot.coordinator import Coordinator, Progress, volume_progress
from backupd.snapshot.metrics import SnapshotMetrics
from backupd.snapshot.providers import open_provider
from backupd.snapshot.providers.base import progress_text
from backupd.snapshot.schedule import Schedule

_log = get_logger("snapshot")
PENDING_WARN_HOURS = 24  # first snapshots take hours; a day means something is stuck


@dataclass
class Run:
    set_id: str
    trigger: str
    done: threading.Event = field(default_factory=threading.Event)
    record: SnapshotSet | None = None


def owner_id() -> str:
    """Which daemon created a set: only its owner's prune or delete ever touches it."""
    return socket.gethostname()


def record_summary(record: SnapshotSet) -> dict[str, Any]:
    return {
        "set_id": record.set_id,
        "state": record.state,
        "trigger": record.trigger,
        "consistency": record.consistency,
        "started_at": record.started_at,
        "completed_at": record.completed_at or None,
        "coordinate": record.coordinate or None,
        "gtid": record.gtid or None,
        "lock_seconds": round(record.lock_seconds, 6),
        "freeze_seconds": round(record.freeze_seconds, 6),
        "error": record.error or None,
    }


def snapshot_event(record: SnapshotSet) -> Event:
    """The notification for a settled run: completed -> on_success, else on_failure."""
    result = "success" if record.state == COMPLETED else record.state
    message = f"snapshot {record.set_id} {record.state}" + (
        f": {record.error}" if record.error else ""
    )
    return Event(
        "snapshot",
        result,
        message,
        set_id=record.set_id,
        error=record.error,
        error_code=record.error_code,
        extra={"trigger": record.trigger, "coordinate": record.coordinate},
    )


def running(progress: Progress | None) -> dict[str, Any] | None:
    """The run in progress: its phase and, while waiting for EC2, each volume's progress."""
    if progress is None:
        return None
    return {"set_id": progress.set_id, "phase": progress.phase, "volumes": progress.volumes}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise UsageError(f"wait must be a number of seconds, got {text!r}") from exc
    return min(max(value, 0.0), 3600.0)


class SnapshotService:
    name = "snapshot"

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.metrics = SnapshotMetrics(context.registry)
        self.owner = owner_id()
        self._queue: queue.Queue[Run | None] = queue.Queue(maxsize=1)
        self._busy = threading.Lock()  # held from an accepted request until it is recorded
        self._current: Run | None = None
        self._coordinator: Coordinator | None = None
        self._thread: threading.Thread | None = None
        self.last: SnapshotSet | None = None
        # set_id -> a set EC2 has not completed yet; the worker replaces the dict, never
        # changes it in place, so status readers in other threads iterate a fixed one
        self.pending: dict[str, SnapshotSet] = {}
        self.last_success_at = 0.0
        self.prune_refusal = ""  # why the latest prune deleted nothing; "" once one was allowed
        self.schedule: Schedule | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thaw_leftovers()
        if self.context.config.snapshot.enabled:
            self.schedule = Schedule(self.context.config.snapshot, self._scheduled, self.metrics)
            self.schedule.start()
        self._thread = threading.Thread(target=self._work, name="snapshot", daemon=True)
        self._thread.start()

    def _thaw_leftovers(self) -> None:
        path = freeze_record.record_path(self.context.config.daemon.socket)
        try:
            results = freeze_record.thaw_leftovers(path)
        except (freeze_record.RecordUnreadable, OSError) as exc:
            _log.error("cannot read the freeze record", path=str(path), error=str(exc))
            return
        for result in results:
            log = _log.error if result.error else _log.warning
            log(
                "a previous run left a freeze record",
                mount=result.mount,
                thawed_now=result.thawed,
                error=result.error or None,
            )

    def stop(self) -> None:
        if self.schedule is not None:
            self.schedule.stop()
        with contextlib.suppress(queue.Full):  # a run is queued; the stop Event ends the worker
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(self.context.config.daemon.shutdown_timeout_seconds / 2)

    def apply_config(self, context: ServiceContext) -> None:
        self.context = context  # the next run uses it
        section = context.config.snapshot
        if self.schedule is not None:
            self.schedule.reschedule(section)
        elif section.enabled:
            self.schedule = Schedule(section, self._scheduled, self.metrics)
            self.schedule.start()

    # -- runs --------------------------------------------------------------------------------

    def request(self, trigger: str) -> Run:
        """Queue a run now; SnapshotInProgress while one is queued or running."""
        if not self._busy.acquire(blocking=False):
            current = self._current
            raise SnapshotInProgress(set_id=current.set_id if current else "starting")
        run = Run(new_set_id(), trigger)
        self._current = run
        self._queue.put_nowait(run)
        return run

    def busy(self) -> bool:
        """A run queued or in progress, or a set EC2 has not completed yet."""
        return self._busy.locked() or bool(self.pending)

    def _scheduled(self) -> None:
        try:
            self.request("schedule")
        except SnapshotInProgress as exc:
            _log.info("scheduled snapshot not started", reason=exc.message)

    def _work(self) -> None:
        self._load_last()
        while not self.context.stop.is_set():
            poll = self.context.config.snapshot.ebs.poll_seconds
            try:
                run = self._queue.get(timeout=poll if self.pending else None)
            except queue.Empty:
                self._follow_up()
                continue
            if run is None:
                return
            try:
                self._execute(run)
            finally:
                self._current = None
                run.done.set()
                self._busy.release()

    def _new_coordinator(self) -> Coordinator:
        config = self.context.config
        return Coordinator(
            config,
            open_provider(config, self.owner),
            Catalog(self.context.store),
            self.owner,
            self.context.stop,
        )

    def _execute(self, run: Run) -> None:
        coordinator = self._new_coordinator()
        self._coordinator = coordinator
        record = coordinator.run(run.set_id, run.trigger)
        self._coordinator = None
        run.record = record
        self.last = record
        self.metrics.observe(record)
        if record.state == PENDING:
            self.pending = {**self.pending, record.set_id: record}
            self.metrics.pending.set(len(self.pending))
        else:
            self.context.notify(snapshot_event(record))  # pending: once EC2 settles it
        if record.state == COMPLETED:
            self.last_success_at = record.completed_at
        if self.schedule is not None:
            self.schedule.after_run(record)

    def _follow_up(self) -> dict[str, SnapshotSet]:
        """One look at every pending set (in the worker thread, so never beside a run);
        returns what each one is now."""
        seen: dict[str, SnapshotSet] = {}
        for set_id, record in self.pending.items():
            if self.context.stop.is_set():
                break
            settled = seen[set_id] = self._new_coordinator().follow_up(record, 0.0)
            if settled.state == PENDING:
                continue
            self.metrics.outcome(settled)
            self.context.notify(snapshot_event(settled))
            if settled.state == COMPLETED:
                self.last_success_at = max(self.last_success_at, settled.completed_at)
            if self.last is not None and self.last.set_id == set_id:
                self.last = settled
        self.pending = {
            set_id: seen.get(set_id, record)
            for set_id, record in self.pending.items()
            if seen.get(set_id, record).state == PENDING
        }
        self.metrics.pending.set(len(self.pending))
        return seen

    def _load_last(self) -> None:
        """Pick up the newest recorded set, for status and metrics after a restart."""
        try:
            sets, _broken = Catalog(self.context.store).list()
        except StorageError as exc:
            _log.warning("cannot read the snapshot catalog", error=exc.message)
            return
        provider = self.context.config.snapshot.provider
        self.pending = {  # left pending by a run's timeout, or by a daemon that died
            record.set_id: record
            for record in sets
            if record.owner == self.owner
            and record.provider == provider
            and record.state == PENDING
            and record.volumes
        }
        seen = self._follow_up()
        sets = [seen.get(s.set_id, s) for s in sets]
        if sets and self.last is None:
            self.last = sets[-1]
        done = [s.completed_at for s in sets if s.state == COMPLETED and s.owner == self.owner]
        if done:
            self.last_success_at = max(done)
            self.metrics.last_success.set(self.last_success_at)
        if self.schedule is not None:
            self.schedule.catch_up(max((s.started_at for s in sets), default=0.0))

    def progress(self) -> Progress | None:
        coordinator = self._coordinator
        return coordinator.progress if coordinator else None

    # -- control API -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/snapshots", self._post_snapshot, changes=True),
            Route("GET", "/v1/snapshots", self._get_snapshots),
            Route("GET", "/v1/snapshot", self._get_snapshot),
            Route("POST", "/v1/prune", self._post_prune, changes=True),
        ]

    def _post_snapshot(self, request: Request) -> tuple[int, dict[str, Any]] | LongPoll:
        wait = bool(request.body.get("wait", False))
        timeout = request.body.get("timeout", 3600)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise UsageError("timeout must be a positive number of seconds")
        run = self.request("manual")
        if wait:
            return LongPoll(run.done, float(timeout), lambda: self._state_of(run, 202))
        return self._state_of(run, 202)

    def _get_snapshots(self, _request: Request) -> tuple[int, dict[str, Any]]:
        listing = Catalog(self.context.store).listing()
        progress = self.progress()
        return 200, {
            "snapshots": [record_summary(s) | {"provider": s.provider} for s in listing.sets],
            "unreadable": [str(item) for item in listing.unreadable],
            "unreadable_sets": [
                {"set_id": item.set_id, "key": item.key, "reason": item.reason}
                for item in listing.unreadable
            ],
            "running": running(progress),
            "next_run_at": self.schedule.next_run_at() if self.schedule is not None else None,
            "schedule": self.context.config.snapshot.schedule,
            "timezone": self.context.config.snapshot.timezone,
        }

    def _state_of(self, run: Run, running_status: int) -> tuple[int, dict[str, Any]]:
        """The recorded set once `run` is done, else where it is (with `running_status`)."""
        if run.done.is_set() and run.record is not None:
            return 200, run.record.to_dict()
        progress = self.progress()
        if progress is None or progress.set_id != run.set_id:
            return running_status, {"set_id": run.set_id, "state": "running", "phase": None}
        return running_status, {"state": "running", **(running(progress) or {})}

    def _get_snapshot(self, request: Request) -> tuple[int, dict[str, Any]] | LongPoll:
        set_id = (request.query.get("set_id") or [""])[0]
        if not set_id:
            raise UsageError("set_id is required: /v1/snapshot?set_id=...")
        current = self._current
        if current is not None and current.set_id == set_id:
            wait = _seconds((request.query.get("wait") or ["0"])[0])
            if wait:
                return LongPoll(current.done, wait, lambda: self._state_of(current, 200))
            return self._state_of(current, 200)
        try:
            return 200, Catalog(self.context.store).get(set_id).to_dict()
        except StorageError as exc:
            if exc.code == "object_missing":
                raise SnapshotNotFound(set_id=set_id) from exc
            raise

    def _post_prune(self, request: Request) -> tuple[int, dict[str, Any]]:
        from backupd.snapshot.prune import prune

        dry_run = bool(request.body.get("dry_run", False))
        config = self.context.config
        document = prune(
            Catalog(self.context.store),
            open_provider(config, self.owner),
            config.snapshot.retention,
            self.owner,
            dry_run=dry_run,
            now=time.time(),
        )
        self._record_prune(document.get("refused"))
        if document["refused"] and not dry_run:
            raise PruneRefused(reason="; ".join(document["refused"]["reasons"]))
        return 200, document

    def _record_prune(self, refused: dict[str, Any] | None) -> None:
        """A refusal counts by reason and keeps status unhealthy until a prune may act again."""
        self.metrics.prune_blocked.set(1 if refused else 0)
        self.prune_refusal = refused["message"] if refused else ""
        for kind in refused["kinds"] if refused else []:
            self.metrics.prune_refused.labels(kind).inc()

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        section = self.context.config.snapshot
        progress = self.progress()
        next_run = self.schedule.next_run_at() if self.schedule is not None else None
        last = self.last
        return {
            "summary": self._summary(progress, next_run),
            "enabled": section.enabled,
            "provider": section.provider,
            "schedule": section.schedule,
            "timezone": section.timezone,
            "mounts": list(section.mounts),
            "next_run_at": next_run,
            "running": running(progress),
            "pending": [
                {"set_id": p.set_id, "volumes": volume_progress(p.volumes)}
                for p in self.pending.values()
            ],
            "last": record_summary(last) if last else None,
            "last_success_at": self.last_success_at or None,
            "prune_refused": self.prune_refusal or None,
        }

    def _summary(self, progress: Progress | None, next_run: float | None) -> str:
        if progress is not None:
            return f"running {progress.set_id} ({progress.phase})"
        last = self.last
        head = (
            f"last {last.set_id} {last.state}"
            + (f" at {last.coordinate}" if last.coordinate else "")
            if last
            else "no snapshot yet"
        )
        tail = (
            f", next {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(next_run))}"
            if next_run
            else ""
        )
        if not self.context.config.snapshot.enabled:
            tail = ", not scheduled (snapshot.enabled = false)"
        pending = "".join(
            f"; {p.set_id} pending (EC2 {progress_text(p.volumes)})" for p in self.pending.values()
        )
        return head + tail + pending

    def warnings(self) -> list[str]:
        found = []
        last = self.last
        if last is not None and last.state == FAILED:
            found.append(f"last snapshot {last.set_id} failed: {last.error}")
        now = time.time()
        for record in self.pending.values():
            hours = (now - record.started_at) / 3600
            if hours >= PENDING_WARN_HOURS:
                found.append(
                    f"snapshot {record.set_id} still pending after {hours:.0f} h "
                    f"(EC2 {progress_text(record.volumes)})"
                )
        if self.prune_refusal:
            found.append(self.prune_refusal)
        return found + self._left_frozen()

    def _left_frozen(self) -> list[str]:
        """The freeze record outlives a run only if a thaw failed or a daemon died frozen."""
        if self._busy.locked() or self.progress() is not None:
            return []
        path = freeze_record.record_path(self.context.config.daemon.socket)
        try:
            mounts = freeze_record.read_record(path)
        except (freeze_record.RecordUnreadable, OSError) as exc:
            return [f"unreadable freeze record: {exc}"]
        if not mounts:
            return []
        return [
            f"{', '.join(mounts)} may still be frozen ({path} outlived its run): "
            "run `backupd thaw-all`"
        ]
