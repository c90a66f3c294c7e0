"""The restore-time budget: how long a restore to *now* would take, from the last drill.

A drill measures every phase of a real restore on this host: volumes ready, server start
(with crash recovery), binlog fetch + replay (bytes/s, transactions/s), proof. The estimate
for a restore to now is

    volumes ready + server start + binlog bytes archived since the newest completed set
                                   / the drill's binlog rate (bytes per second of fetch+apply)

No drill recorded yet (or one that replayed nothing while there is a backlog): no estimate,
and the gauge is absent rather than a made-up number. `snapshot.max_restore_seconds` (0 =
off) takes an extra snapshot, trigger `restore_budget`, when the estimate passes it: a new
set empties the backlog. When the fixed part alone passes the budget, a snapshot cannot help:
that is a warning, not a snapshot loop. The pure parts (phases, backlog, estimate, decision)
are table-tested; `RestoreBudget` is the daemon service around them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backupd.binlog import layout
from backupd.binlog.archive import Archive, ArchiveView, Timeline, cluster_name
from backupd.control.server import Route
from backupd.durable import write_file
from backupd.errors import BackupdError, SnapshotInProgress
from backupd.log import get_logger
from backupd.metrics import PREFIX
from backupd.service import ServiceContext
from backupd.snapshot.catalog import COMPLETED, Catalog, SnapshotSet
from backupd.snapshot.catalog import PREFIX as SETS

_log = get_logger("restore_estimate")

PHASES_FILE = "restore-phases.json"
TRIGGER = "restore_budget"
RETRY_SECONDS = 900.0  # a budget snapshot that failed is not retried sooner than this


@dataclass(frozen=True)
class DrillPhases:
    """What the last passing drill measured, in seconds (not cumulative)."""

    measured_at: float
    set_id: str
    volumes_ready_seconds: float
    server_start_seconds: float
    fetch_seconds: float
    replay_seconds: float
    replay_bytes: int
    replay_transactions: int
    proof_seconds: float

    @property
    def fixed_seconds(self) -> float:
        """What every restore pays, whatever the backlog."""
        return self.volumes_ready_seconds + self.server_start_seconds

    @property
    def binlog_seconds(self) -> float:
        return self.fetch_seconds + self.replay_seconds

    @property
    def bytes_per_second(self) -> float | None:
        seconds = self.binlog_seconds
        return self.replay_bytes / seconds if self.replay_bytes > 0 and seconds > 0 else None

    @property
    def transactions_per_second(self) -> float | None:
        seconds = self.replay_seconds
        return self.replay_transactions / seconds if seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _step(steps: dict[str, float], *names: str) -> float | None:
    for name in names:
        if name in steps:
            return float(steps[name])
    return None


def phases_of(doc: dict[str, Any], measured_at: float) -> DrillPhases | None:
    """A drill's document (its cumulative `steps`, `replay`, `end`) as phases; None when it
    lacks the steps a phase needs."""
    steps = doc.get("steps") or {}
    fetched = _step(steps, "plan_and_fetch")
    ready = _step(steps, "volumes_ready", "materialise")
    started = _step(steps, "server_started")
    replayed = _step(steps, "replayed")
    proved = _step(steps, "proved")
    if None in (fetched, ready, started, replayed, proved):
        return None
    assert fetched is not None and ready is not None and started is not None
    assert replayed is not None and proved is not None
    replay = doc.get("replay") or {}
    end = doc.get("end") or {}
    snapshot = doc.get("snapshot") or {}
    return DrillPhases(
        measured_at=measured_at,
        set_id=str(snapshot.get("set_id", "")),
        volumes_ready_seconds=max(0.0, ready - fetched),
        server_start_seconds=max(0.0, started - ready),
        fetch_seconds=fetched,
        replay_seconds=max(0.0, replayed - started),
        replay_bytes=int(replay.get("bytes", 0)),
        replay_transactions=int(end.get("transactions", 0)),
        proof_seconds=max(0.0, proved - replayed),
    )


def record_phases(state_dir: str, doc: dict[str, Any], measured_at: float) -> None:
    """Keep a passing drill's phases for the estimate (a failure to write is logged only)."""
    phases = phases_of(doc, measured_at)
    if phases is None:
        _log.warning("drill document lacks the steps the restore estimate needs")
        return
    try:
        save_phases(state_dir, phases)
    except OSError as exc:
        _log.error("cannot record the drill's phases", error=str(exc))


def phases_path(state_dir: str) -> Path:
    return Path(state_dir) / PHASES_FILE


def save_phases(state_dir: str, phases: DrillPhases) -> None:
    """Durably (durable.write_file), so a restart or a crash keeps the last measurement."""
    path = phases_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, json.dumps(phases.to_dict(), indent=1, sort_keys=True).encode())


def load_phases(state_dir: str) -> DrillPhases | None:
    try:
        data = json.loads(phases_path(state_dir).read_text())
        known = DrillPhases.__dataclass_fields__
        return DrillPhases(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None


def _coordinate(text: str) -> tuple[str, int] | None:
    file, _, position = text.rpartition(":")
    return (file, int(position)) if file and position.isdigit() else None


def bytes_between(
    timeline: Timeline, start: tuple[str, int] | None, end: tuple[str, int] | None
) -> int:
    """Archived bytes of `timeline` from `start` (None: its beginning) to `end` (None: its end)."""
    total = 0
    for name, chain in timeline.files().items():
        low, high = 0, chain.end
        if start is not None:
            if layout.file_order(name) < layout.file_order(start[0]):
                continue
            if name == start[0]:
                low = start[1]
        if end is not None:
            if layout.file_order(name) > layout.file_order(end[0]):
                continue
            if name == end[0]:
                high = min(high, end[1])
        total += max(0, high - low)
    return total


def backlog_bytes(view: ArchiveView, record: SnapshotSet) -> int | None:
    """Binlog bytes archived after `record`'s coordinate, up to the newest timeline's end
    (crossing branch points); None when the set is not on the newest timeline's lineage."""
    latest = view.latest()
    start = _coordinate(record.coordinate)
    if latest is None or start is None:
        return None
    path = view.lineage(latest.id)
    ids = [t.id for t in path]
    first = record.timeline or latest.id
    if first not in ids:
        return None
    path = path[ids.index(first) :]
    total = 0
    for index, timeline in enumerate(path):
        begin = start if index == 0 else _coordinate(timeline.history.child_start)
        following = path[index + 1] if index + 1 < len(path) else None
        stop = _coordinate(following.history.parent_end) if following else None
        total += bytes_between(timeline, begin, stop)
    return total


def estimate_seconds(phases: DrillPhases, backlog: int) -> float | None:
    """The restore time to now; None when the drill measured no binlog rate and there is a
    backlog to replay."""
    if backlog <= 0:
        return phases.fixed_seconds
    rate = phases.bytes_per_second
    return phases.fixed_seconds + backlog / rate if rate else None


def decide(
    estimate: float | None,
    budget: float,
    fixed: float,
    busy: bool,
    since_trigger: float | None,
) -> str:
    """What to do about the budget: off, within, futile (a snapshot cannot bring it under),
    busy (a run is in progress or pending), wait (a budget snapshot ran recently), trigger."""
    if budget <= 0:
        return "off"
    if estimate is None or estimate <= budget:
        return "within"
    if fixed >= budget:
        return "futile"
    if busy:
        return "busy"
    if since_trigger is not None and since_trigger < RETRY_SECONDS:
        return "wait"
    return "trigger"


@dataclass(frozen=True)
class Assessment:
    phases: DrillPhases | None
    newest_set: str = ""
    backlog: int | None = None
    estimate: float | None = None
    decision: str = "within"
    at: float = 0.0


class BudgetGauges(Collector):
    """Exported at scrape time from the latest assessment; absent when not known."""

    def __init__(self, latest: Callable[[], Assessment], budget: Callable[[], float]) -> None:
        self._latest = latest
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        found = self._latest()
        yield _gauge(
            "restore_max_seconds",
            "snapshot.max_restore_seconds: the restore-time budget (0: off)",
            self._budget(),
        )
        if found.estimate is not None:
            yield _gauge(
                "restore_estimated_seconds",
                "Estimated restore time to now: last drill's volumes + server start + binlog "
                "backlog / its replay rate",
                found.estimate,
            )
        if found.backlog is not None:
            yield _gauge(
                "restore_backlog_bytes",
                "Binlog bytes archived since the newest completed snapshot set",
                found.backlog,
            )
        phases = found.phases
        if phases is None:
            return
        family = GaugeMetricFamily(
            f"{PREFIX}_drill_phase_seconds",
            "Last passing drill, seconds per phase",
            labels=["phase"],
        )
        for name, value in (
            ("volumes_ready", phases.volumes_ready_seconds),
            ("server_start", phases.server_start_seconds),
            ("fetch", phases.fetch_seconds),
            ("replay", phases.replay_seconds),
            ("proof", phases.proof_seconds),
        ):
            family.add_metric([name], value)
        yield family
        if phases.bytes_per_second is not None:
            yield _gauge(
                "drill_replay_bytes_per_second",
                "Last passing drill: binlog bytes per second of fetch + replay",
                phases.bytes_per_second,
            )
        if phases.transactions_per_second is not None:
            yield _gauge(
                "drill_replay_transactions_per_second",
                "Last passing drill: transactions replayed per second",
                phases.transactions_per_second,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


class NewestSet:
    """The newest completed set, reading each manifest once (completed ones do not change)."""

    def __init__(self) -> None:
        self._completed: dict[str, SnapshotSet] = {}

    def find(self, catalog: Catalog) -> SnapshotSet | None:
        keys = sorted(
            (i.key for i in catalog.store.list(SETS) if i.key.endswith(".json")), reverse=True
        )
        self._completed = {k: v for k, v in self._completed.items() if k in keys}
        for key in keys:  # set ids sort by time
            record = self._completed.get(key)
            if record is None:
                try:
                    record = SnapshotSet.from_json(catalog.store.get(key))
                except (BackupdError, ValueError, TypeError):
                    continue
                if record.state != COMPLETED:
                    continue
                self._completed[key] = record
            return record
        return None


class RestoreBudget:
    """The daemon service: assess every `snapshot.restore_estimate_seconds` once a drill
    has measured something; take the budget snapshot through `request_snapshot`."""

    name = "restore_estimate"

    def __init__(
        self,
        context: ServiceContext,
        request_snapshot: Callable[[str], Any],
        snapshot_busy: Callable[[], bool],
        live_backlog: Callable[[str, int], int | None] = lambda _coordinate, _timeline: None,
    ) -> None:
        self.context = context
        self.request_snapshot = request_snapshot
        self.snapshot_busy = snapshot_busy
        self.live_backlog = live_backlog  # BinlogService.bytes_since: no repository request
        self.latest = Assessment(None)
        self.triggered: dict[str, Any] | None = None
        self._triggered_at: float | None = None
        self._newest = NewestSet()
        self._archive: Archive | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._main, name="restore-estimate", daemon=True)
        self.snapshots = Counter(
            f"{PREFIX}_restore_budget_snapshots",
            "Snapshots taken because the restore estimate passed snapshot.max_restore_seconds",
            registry=context.registry,
        )
        context.registry.register(
            BudgetGauges(
                lambda: self.latest, lambda: self.context.config.snapshot.max_restore_seconds
            )
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._wake.set()
        self._thread.join(self.context.config.daemon.shutdown_timeout_seconds / 4)

    def wake(self) -> None:
        """Assess now (a drill just recorded new phases)."""
        self._wake.set()

    def _main(self) -> None:
        while not self.context.stop.is_set():
            try:
                self.assess()
            except BackupdError as exc:
                _log.warning("restore estimate not updated", error=exc.message)
            except Exception:  # a bug must not end the estimates for good
                _log.exception("restore estimate crashed")
            self._wake.wait(self.context.config.snapshot.restore_estimate_seconds)
            self._wake.clear()

    def assess(self) -> Assessment:
        config = self.context.config
        phases = load_phases(config.daemon.state_dir)
        if phases is None:  # nothing measured: no LISTs, no estimate
            self.latest = Assessment(None, at=time.time())
            return self.latest
        newest = self._newest.find(Catalog(self.context.store))
        backlog: int | None = None
        if newest is not None:
            backlog = self._backlog(newest) if config.binlog.enabled else 0
        estimate = estimate_seconds(phases, backlog) if backlog is not None else None
        since = time.monotonic() - self._triggered_at if self._triggered_at else None
        budget = config.snapshot.max_restore_seconds
        decision = decide(estimate, budget, phases.fixed_seconds, self.snapshot_busy(), since)
        self.latest = Assessment(
            phases, newest.set_id if newest else "", backlog, estimate, decision, time.time()
        )
        if decision == "trigger":
            self._trigger(estimate or 0.0, budget)
        return self.latest

    def _backlog(self, newest: SnapshotSet) -> int | None:
        """From the binlog service when the set's file is still on the server (the usual
        case), else from one LIST of the archive."""
        live = self.live_backlog(newest.coordinate, newest.timeline)
        if live is not None:
            return live
        store = self.context.store
        if self._archive is None or self._archive.store is not store:
            self._archive = Archive(store, cluster_name(self.context.config.storage))
        return backlog_bytes(self._archive.read(), newest)

    def _trigger(self, estimate: float, budget: float) -> None:
        try:
            run = self.request_snapshot(TRIGGER)
        except SnapshotInProgress:
            return
        self._triggered_at = time.monotonic()
        self.snapshots.inc()
        self.triggered = {"set_id": run.set_id, "at": time.time(), "estimate_seconds": estimate}
        _log.warning(
            "estimated restore time passed the budget: taking a snapshot",
            set_id=run.set_id,
            estimated_seconds=round(estimate, 1),
            max_restore_seconds=budget,
        )

    def routes(self) -> list[Route]:
        return []

    def status(self) -> dict[str, Any]:
        found = self.latest
        budget = self.context.config.snapshot.max_restore_seconds
        if found.phases is None:
            summary = "no estimate: no drill has recorded its phases yet"
        elif found.estimate is None:
            summary = "no estimate: the newest set or the binlog rate is not known"
        else:
            summary = f"a restore to now would take about {found.estimate:.0f}s" + (
                f" (budget {budget:.0f}s)" if budget > 0 else ""
            )
        return {
            "summary": summary,
            "estimated_seconds": round(found.estimate, 3) if found.estimate is not None else None,
            "max_restore_seconds": budget or None,
            "backlog_bytes": found.backlog,
            "newest_set": found.newest_set or None,
            "decision": found.decision,
            "drill_phases": found.phases.to_dict() if found.phases else None,
            "last_budget_snapshot": self.triggered,
            "assessed_at": found.at or None,
        }

    def warnings(self) -> list[str]:
        found = self.latest
        if found.decision != "futile" or found.phases is None:
            return []
        return [
            f"restore-time budget {self.context.config.snapshot.max_restore_seconds:.0f}s is "
            f"below the last drill's volumes + server start ({found.phases.fixed_seconds:.0f}s): "
            "a snapshot cannot bring the estimate under it"
        ]

    def apply_config(self, context: ServiceContext) -> None:
        self.context = context
        self._wake.set()
