"""One snapshot run: pre-check, flush, block commits, read the coordinate, freeze, start the
set, thaw, unlock, wait, record. One try/finally records the outcome whatever happens.

Commits stay blocked for at most `max_freeze_seconds`: the lock, the freeze and the provider's
start share that one budget (deadline.py). A locked section that failed in a way that may pass
is retried with a fresh lock, up to `lock_attempts`.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from backupd import __version__, freeze_record
from backupd.binlog.archive import Archive, cluster_name
from backupd.config import Config
from backupd.errors import (
    BackupdError,
    FreezeFailed,
    FreezeRefused,
    HookFailed,
    LockDeadlineExceeded,
    LockFailed,
    LongQueriesRunning,
    ProviderError,
    SnapshotStillPending,
    ThawFailed,
)
from backupd.log import get_logger
from backupd.snapshot import freezer
from backupd.snapshot.catalog import (
    COMPLETED,
    FAILED,
    PENDING,
    SKIPPED,
    Catalog,
    SnapshotSet,
    VolumeSnapshot,
)
from backupd.snapshot.dblock import DatabaseLock
from backupd.snapshot.deadline import LockDeadline
from backupd.snapshot.hooks import run_hooks
from backupd.snapshot.long_queries import LongQuery
from backupd.snapshot.protocols import CommitLock, Freezer, FreezerFactory, LockFactory
from backupd.snapshot.providers import base
from backupd.snapshot.providers.base import SnapshotProvider, Target

_log = get_logger("snapshot")

KILL_GRACE_SECONDS = 5.0
LONG_QUERY_POLL_SECONDS = 1.0
TAG_VALUE_MAX = 255


def retryable(exc: BackupdError) -> bool:
    """A failed locked section that a fresh lock a little later may not meet again: the
    deadline, a lock not granted, a provider error marked transient (EC2 timeout, 5xx)."""
    if isinstance(exc, ProviderError):
        return bool(exc.fields.get("transient"))
    return isinstance(exc, LockDeadlineExceeded | LockFailed)


def long_query_action(policy: str, queries: list[LongQuery], waited: float, budget: float) -> str:
    """What to do about statements a lock would queue behind: proceed, wait, kill or skip."""
    if not queries:
        return "proceed"
    if policy == "wait":
        return "wait" if waited < budget else "skip"
    if policy == "kill-selects":
        if waited < KILL_GRACE_SECONDS:
            return "wait"
        return "kill" if all(q.read_only for q in queries) else "skip"
    return "skip"


def snapshot_tags(record: SnapshotSet, extra: dict[str, str]) -> dict[str, str]:
    tags = {
        **extra,
        base.TAG_SET_ID: record.set_id,
        base.TAG_OWNER: record.owner,
        base.TAG_HOST: record.host,
        base.TAG_VERSION: record.version,
        base.TAG_CONSISTENCY: record.consistency,
        base.TAG_COORDINATE: record.coordinate,
        base.TAG_GTID: record.gtid,
        base.TAG_TRIGGER: record.trigger,
    }
    return {key: value[:TAG_VALUE_MAX] for key, value in tags.items()}


def syncfs(path: str) -> None:
    """Write back one filesystem before the lock, so the freeze has little left to flush.

    Only an optimisation (FIFREEZE syncs too), so a failure here is ignored.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    except (OSError, AttributeError) as exc:
        _log.debug("syncfs unavailable", mount=path, error=str(exc))
    finally:
        os.close(fd)


def own_paths(config: Config) -> dict[str, str]:
    """Where the daemon writes or runs from: never frozen."""
    paths = {
        "daemon.state_dir": config.daemon.state_dir,
        "daemon.spool_dir": config.daemon.spool_dir,
        "the daemon's control socket": os.path.dirname(config.daemon.socket),
        "the daemon's program": os.path.dirname(os.path.abspath(freezer.__file__)),
    }
    if config.snapshot.provider == "local":
        paths["snapshot.local.directory"] = config.snapshot.local.directory
    if config.storage.url.startswith("file://"):
        paths["the repository"] = config.storage.url.removeprefix("file://")
    return paths


@dataclass
class Progress:
    """What a running snapshot is doing (read by status without locking)."""

    set_id: str
    phase: str = "starting"
    volumes: list[dict[str, str]] = field(default_factory=list)  # while waiting: EC2 progress

    def waiting(self, volumes: list[VolumeSnapshot]) -> None:
        self.volumes = volume_progress(volumes)


def volume_progress(volumes: list[VolumeSnapshot]) -> list[dict[str, str]]:
    """Per volume: id, snapshot id, state and EC2's percentage (API and `snapshot --wait`)."""
    return [
        {
            "volume": v.volume,
            "snapshot_id": v.snapshot_id,
            "state": v.state,
            "progress": v.progress,
        }
        for v in volumes
    ]


class Coordinator:
    def __init__(
        self,
        config: Config,
        provider: SnapshotProvider,
        catalog: Catalog,
        owner: str,
        stop: threading.Event,
        lock_factory: LockFactory = DatabaseLock,
        freezer_factory: FreezerFactory = freezer.FrozenMounts,
    ) -> None:
        self.config = config
        self.provider = provider
        self.catalog = catalog
        self.owner = owner
        self.stop = stop
        self.lock_factory = lock_factory
        self.freezer_factory = freezer_factory
        self.progress: Progress | None = None
        self._latest: SnapshotSet  # the run's record as far as it got (failures keep it)

    def new_record(self, set_id: str, trigger: str) -> SnapshotSet:
        return SnapshotSet(
            set_id=set_id,
            provider=self.provider.name,
            host=socket.gethostname(),
            owner=self.owner,
            version=__version__,
            trigger=trigger,
            mounts=list(self.config.snapshot.mounts),
            started_at=time.time(),
            cluster=cluster_name(self.config.storage),
        )

    def run(self, set_id: str, trigger: str) -> SnapshotSet:
        """Take one snapshot set; always returns (and records) its outcome."""
        self.progress = Progress(set_id)
        record = self._latest = self.new_record(set_id, trigger)
        try:
            record = self._take(record)
        except LongQueriesRunning as exc:
            record = self._latest.with_(state=SKIPPED, error=exc.message, error_code=exc.code)
        except BackupdError as exc:
            record = self._latest.with_(state=FAILED, error=exc.message, error_code=exc.code)
            self._discard_partial(record)
        except Exception as exc:
            _log.exception("snapshot run crashed", set_id=set_id)
            record = self._latest.with_(state=FAILED, error=str(exc), error_code="internal_error")
            self._discard_partial(record)
        finally:
            if record.state != PENDING:  # a pending set completes later (follow_up)
                record = record.with_(completed_at=time.time())
            self._save(record)
            self.progress = None
        log = _log.info if record.state in (COMPLETED, PENDING) else _log.warning
        log(
            "snapshot run finished",
            set_id=set_id,
            state=record.state,
            consistency=record.consistency,
            coordinate=record.coordinate,
            gtid=record.gtid,
            lock_seconds=round(record.lock_seconds, 4),
            freeze_seconds=round(record.freeze_seconds, 4),
            error=record.error or None,
        )
        return record

    def follow_up(self, record: SnapshotSet, timeout: float) -> SnapshotSet:
        """Ask the provider about a pending set (its run timed out waiting, or the daemon
        that took it died): record it once it completed or errored, and progress on the way."""
        try:
            volumes = self.provider.wait(record.set_id, record.volumes, timeout)
        except SnapshotStillPending as exc:
            if exc.volumes != record.volumes:
                record = record.with_(volumes=exc.volumes)
                self._save(record)
            return record
        except BackupdError as exc:
            record = record.with_(state=FAILED, error=exc.message, error_code=exc.code)
        else:
            record = record.with_(volumes=volumes, state=COMPLETED, error="", error_code="")
        record = record.with_(completed_at=time.time())
        self._save(record)
        log = _log.info if record.state == COMPLETED else _log.warning
        log("pending snapshot set settled", set_id=record.set_id, state=record.state,
            error=record.error or None)  # fmt: skip
        return record

    def _discard_partial(self, record: SnapshotSet) -> None:
        """A run that failed in or after the provider's start (its error, the deadline, the
        watchdog) may have left a set, or part of one: delete it by its set id."""
        if self.progress is None or self.progress.phase != "frozen" or record.volumes:
            return
        try:
            gone = self.provider.delete(record)
        except (BackupdError, OSError) as exc:
            _log.error("cannot discard a partial set", set_id=record.set_id, error=str(exc))
            return
        if gone:
            _log.warning("discarded a partial set", set_id=record.set_id, snapshots=gone)

    def _current_phase(self) -> str:
        return self.progress.phase if self.progress else ""

    def _phase(self, phase: str) -> None:
        if self.progress is not None:
            self.progress.phase = phase

    def _on_timeline(self, record: SnapshotSet) -> SnapshotSet:
        """The set with the archive timeline its server was writing at the lock (looked up
        once, after the unlock; restore derives it when this could not)."""
        if not record.server_identity:
            return record
        try:
            archive = Archive(self.catalog.store, record.cluster)
            at = record.locked_at or record.started_at
            return record.with_(timeline=archive.timeline_of(record.server_identity, at))
        except BackupdError as exc:
            _log.warning("cannot tell the set's archive timeline", error=exc.message)
            return record

    def _save(self, record: SnapshotSet) -> None:
        try:
            self.catalog.put(record)
        except BackupdError as exc:
            _log.error("cannot write snapshot manifest", set_id=record.set_id, error=exc.message)

    def _take(self, record: SnapshotSet) -> SnapshotSet:
        section = self.config.snapshot
        self._phase("checking")
        if not section.mounts:
            raise FreezeRefused(reason="snapshot.mounts is empty: nothing to freeze consistently")
        freezer.check_mounts(section.mounts, own_paths(self.config))
        targets = self.provider.prepare(section.mounts)
        for mount in section.mounts:
            syncfs(mount)
        record, volumes = self._attempts(record, targets)
        record = self._latest = self._on_timeline(record).with_(volumes=volumes)  # a failure
        # now keeps the set
        self._phase("waiting")
        self._save(record)  # pending: visible while it completes
        try:
            run_hooks(section.hooks.post_thaw, section.hooks.timeout_seconds)
        except HookFailed as exc:  # the set is good; the hook's failure is only reported
            _log.warning("post_thaw hook failed", set_id=record.set_id, error=exc.message)
        try:
            volumes = self.provider.wait(
                record.set_id,
                volumes,
                float(section.ebs.wait_timeout_seconds),
                self.progress.waiting if self.progress is not None else None,
            )
        except SnapshotStillPending as exc:  # a first snapshot of a big volume takes hours
            _log.warning("snapshot set still pending; following it up", set_id=record.set_id,
                         detail=exc.message)  # fmt: skip
            return record.with_(volumes=exc.volumes, state=PENDING)
        return record.with_(volumes=volumes, state=COMPLETED)

    def _attempts(
        self, record: SnapshotSet, targets: list[Target]
    ) -> tuple[SnapshotSet, list[VolumeSnapshot]]:
        """The locked section, retried with a fresh lock after a failure that may pass."""
        section = self.config.snapshot
        failures: list[str] = []
        attempt = 1
        while True:
            record = self._latest = record.with_(attempts=attempt, attempt_errors=failures)
            try:
                return self._attempt(record, targets)
            except BackupdError as exc:
                if not retryable(exc) or attempt >= section.lock_attempts:
                    raise
                failures = [*failures, f"{exc.code}: {exc.message}"]
                _log.warning(
                    "locked section failed; retrying with a fresh lock",
                    set_id=record.set_id,
                    attempt=attempt,
                    error=exc.message,
                )
                self._discard_partial(self._latest)
                if self.stop.wait(section.lock_retry_delay_seconds):
                    raise
            attempt += 1

    def _attempt(
        self, record: SnapshotSet, targets: list[Target]
    ) -> tuple[SnapshotSet, list[VolumeSnapshot]]:
        """One locked section; a capture the deadline overtook fails, whatever it returned."""
        deadline = LockDeadline(self.config.snapshot.max_freeze_seconds)
        try:
            captured = self._locked_capture(record, targets, deadline)
        except BackupdError as exc:
            if deadline.missed:
                raise self._overrun(deadline) from exc
            raise
        if deadline.missed:
            raise self._overrun(deadline)
        return captured

    def _overrun(self, deadline: LockDeadline) -> LockDeadlineExceeded:
        phase = deadline.during
        during = {
            "locking": "while taking the lock or running the pre_freeze hooks",
            "frozen": f"while the {self.provider.name} provider's start call ran",
        }
        return LockDeadlineExceeded(
            seconds=deadline.seconds, during=during.get(phase, f"in phase {phase}")
        )

    def _locked_capture(
        self, record: SnapshotSet, targets: list[Target], deadline: LockDeadline
    ) -> tuple[SnapshotSet, list[VolumeSnapshot]]:
        section = self.config.snapshot
        lock = self.lock_factory(self.config.mysql, section.lock_timeout_seconds)
        frozen = self.freezer_factory(
            section.mounts,
            section.max_freeze_seconds,
            freeze_record.record_path(self.config.daemon.socket),
        )
        try:
            self._phase("pre-check")
            self._clear_long_queries(lock)
            lock.flush_tables()
            frozen.prepare()  # descriptors and watchdog ready before commits are blocked
            self._phase("locking")
            deadline.start([frozen.thaw_now, lock.abort], phase=self._current_phase)
            state = lock.lock()
            record = self._latest = record.with_(
                coordinate=state.coordinate,
                gtid=state.gtid,
                locked_at=state.locked_at,
                flavor=lock.version.flavor,
                server_version=lock.version.version,
                **_layout_fields(lock),
            )
            run_hooks(section.hooks.pre_freeze, section.hooks.timeout_seconds)
            record, volumes = self._frozen_capture(record, targets, frozen, deadline)
        finally:
            try:
                lock.unlock()
            except BackupdError as exc:  # closing the session below drops the lock anyway
                _log.warning("unlock failed; closing the lock connection", error=exc.message)
            finally:
                deadline.cancel()  # its release actions are done before the lock is closed
                lock.close()
                unlocked = deadline.released_at or time.time()
                frozen.close()
                self._latest = _unlocked(self._latest, unlocked)  # failures keep it too
        record = _unlocked(record, unlocked)
        if frozen.watchdog_fired:  # run() discards the set (one discard path for every failure)
            if frozen.thaw_failed:
                raise ThawFailed(
                    mount=",".join(section.mounts),
                    reason="the watchdog's FITHAW failed after max_freeze_seconds="
                    f"{section.max_freeze_seconds}; the snapshot was discarded",
                )
            raise FreezeFailed(
                mount=",".join(section.mounts),
                reason=f"held longer than max_freeze_seconds={section.max_freeze_seconds}; "
                "the watchdog thawed it, so the snapshot was discarded",
            )
        return record.with_(state=PENDING), volumes

    def _frozen_capture(
        self,
        record: SnapshotSet,
        targets: list[Target],
        frozen: Freezer,
        deadline: LockDeadline,
    ) -> tuple[SnapshotSet, list[VolumeSnapshot]]:
        section = self.config.snapshot
        self._phase("frozen")
        tags = snapshot_tags(record, section.ebs.tags)
        volumes: list[VolumeSnapshot] | None = None
        if deadline.expired:  # the lock is gone already: freezing now would only stall writers
            raise FreezeFailed(mount=",".join(section.mounts), reason="the lock deadline passed")
        try:
            with frozen:
                volumes = self.provider.start(record.set_id, targets, tags, deadline.at)
                deadline.captured()
        except FreezeFailed as exc:
            if volumes is not None or deadline.expired or not section.crash_consistent_fallback:
                raise
            _log.warning("freeze failed; taking a crash-consistent snapshot", error=exc.message)
            record = record.with_(consistency="crash")
            volumes = self.provider.start(
                record.set_id, targets, snapshot_tags(record, section.ebs.tags), deadline.at
            )
            deadline.captured()
            return record, volumes
        record = record.with_(
            frozen_at=frozen.frozen_at, thawed_at=frozen.thawed_at, freeze_seconds=frozen.seconds
        )
        return record, volumes

    def _clear_long_queries(self, lock: CommitLock) -> None:
        section = self.config.snapshot
        started = time.monotonic()
        while True:
            queries = lock.long_queries(section.long_query_seconds)
            waited = time.monotonic() - started
            action = long_query_action(
                section.on_long_query, queries, waited, section.long_query_wait_seconds
            )
            if action == "proceed":
                return
            if action == "kill":
                for query in queries:
                    killed = lock.kill_query(query)
                    _log.warning(
                        "killed long read-only statement" if killed else "statement already ended",
                        query=query.describe(),
                        query_id=query.query_id or None,
                    )
            elif action == "skip" or self.stop.wait(LONG_QUERY_POLL_SECONDS):
                raise LongQueriesRunning(
                    count=len(queries),
                    seconds=section.long_query_seconds,
                    detail="; ".join(q.describe() for q in queries[:3]),
                )


def _unlocked(record: SnapshotSet, at: float) -> SnapshotSet:
    """When commits flowed again (the deadline's release, or the unlock and close)."""
    if not record.locked_at:
        return record
    return record.with_(unlocked_at=at, lock_seconds=at - record.locked_at)


def _layout_fields(lock: Any) -> dict[str, str]:
    layout = getattr(lock, "layout", None)
    if layout is None:
        return {}
    return {
        "server_identity": layout.identity,
        "datadir": layout.datadir,
        "log_bin_basename": layout.log_bin_basename,
    }
