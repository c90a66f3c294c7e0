"""The restore-time estimate: drill phases, the binlog backlog since the newest set across
timelines, the estimate and the budget decision (tables), the gauges (absent when unknown)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from backupd.binlog.archive import ArchiveView, History, Timeline
from backupd.binlog.extent import Extent
from backupd.binlog.layout import SegmentKey
from backupd.restore_estimate import (
    Assessment,
    BudgetGauges,
    DrillPhases,
    NewestSet,
    backlog_bytes,
    decide,
    estimate_seconds,
    load_phases,
    phases_of,
    save_phases,
)
from backupd.snapshot.catalog import COMPLETED, FAILED, Catalog, SnapshotSet
from backupd.storage.filestore import FileStore

DRILL_DOC = {
    "snapshot": {"set_id": "S1"},
    "replay": {"bytes": 4_000_000, "events": 900},
    "end": {"transactions": 300},
    "steps": {
        "plan_and_fetch": 1.0,
        "materialise": 4.0,
        "server_started": 6.5,
        "replayed": 9.5,
        "proved": 10.0,
        "server_stopped": 11.0,
    },
}


def phases(**changes: float) -> DrillPhases:
    base = phases_of(DRILL_DOC, 1000.0)
    assert base is not None
    return DrillPhases(**{**base.to_dict(), **changes})


def test_a_drill_document_becomes_phases() -> None:
    found = phases()
    assert found.set_id == "S1"
    assert found.fetch_seconds == 1.0
    assert found.volumes_ready_seconds == 3.0
    assert found.server_start_seconds == 2.5
    assert found.replay_seconds == 3.0
    assert found.proof_seconds == 0.5
    assert found.fixed_seconds == 5.5
    assert found.bytes_per_second == pytest.approx(1_000_000)  # 4 MB over fetch 1 s + replay 3 s
    assert found.transactions_per_second == pytest.approx(100)


def test_a_document_without_the_steps_gives_no_phases() -> None:
    assert phases_of({"steps": {"plan_and_fetch": 1.0}}, 0.0) is None
    assert phases_of({}, 0.0) is None


def test_an_ebs_drill_names_its_volume_step() -> None:
    steps = {**DRILL_DOC["steps"], "volumes_ready": 5.0}  # type: ignore[dict-item]
    del steps["materialise"]
    found = phases_of({**DRILL_DOC, "steps": steps}, 0.0)
    assert found is not None and found.volumes_ready_seconds == 4.0


def test_phases_survive_a_restart(tmp_path: Path) -> None:
    assert load_phases(str(tmp_path)) is None
    save_phases(str(tmp_path), phases())
    assert load_phases(str(tmp_path)) == phases()
    (tmp_path / "restore-phases.json").write_text("{not json")
    assert load_phases(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("backlog", "replay_bytes", "expected"),
    [
        (0, 4_000_000, 5.5),  # nothing to replay: volumes + server start
        (2_000_000, 4_000_000, 7.5),  # + 2 MB at 1 MB/s
        (0, 0, 5.5),
        (10, 0, None),  # a backlog but no measured rate: no estimate
    ],
)
def test_estimate(backlog: int, replay_bytes: int, expected: float | None) -> None:
    assert estimate_seconds(phases(replay_bytes=replay_bytes), backlog) == expected


@pytest.mark.parametrize(
    ("estimate", "budget", "fixed", "busy", "since", "expected"),
    [
        (500.0, 0.0, 5.0, False, None, "off"),
        (None, 60.0, 5.0, False, None, "within"),
        (59.0, 60.0, 5.0, False, None, "within"),
        (61.0, 60.0, 5.0, False, None, "trigger"),
        (61.0, 60.0, 60.0, False, None, "futile"),  # volumes + start alone pass it
        (61.0, 60.0, 5.0, True, None, "busy"),
        (61.0, 60.0, 5.0, False, 30.0, "wait"),  # a budget snapshot just ran
        (61.0, 60.0, 5.0, False, 3600.0, "trigger"),
    ],
)
def test_budget_decision(
    estimate: float | None,
    budget: float,
    fixed: float,
    busy: bool,
    since: float | None,
    expected: str,
) -> None:
    assert decide(estimate, budget, fixed, busy, since) == expected


def segment(stream: str, file: str, start: int, end: int, kind: str = "tx") -> SegmentKey:
    extent = Extent(file, start, end, 0, 0, "", "", kind)
    return SegmentKey(stream, extent, "0" * 64, "0" * 64, "bin")


def timeline(number: int, segments: list[tuple[str, int, int]], **history: object) -> Timeline:
    stream = f"c/tl{number:06d}"
    made = History(number, stream, "start", "7", 0.0, **history)  # type: ignore[arg-type]
    return Timeline(made, [segment(stream, f, a, b) for f, a, b in segments])


def record(coordinate: str, timeline_id: int = 0) -> SnapshotSet:
    return SnapshotSet("S", "local", "h", "o", "0", coordinate=coordinate, timeline=timeline_id)


def test_backlog_counts_bytes_after_the_coordinate() -> None:
    one = timeline(1, [("b.000001", 0, 100), ("b.000001", 100, 400), ("b.000002", 0, 50)])
    view = ArchiveView("c", {1: one}, [])
    assert backlog_bytes(view, record("b.000001:150")) == 250 + 50
    assert backlog_bytes(view, record("b.000002:50")) == 0
    assert backlog_bytes(view, record("")) is None


def test_backlog_crosses_a_branch_point() -> None:
    one = timeline(1, [("b.000001", 0, 1000)])
    two = timeline(
        2, [("c.000001", 0, 300)], parent=1, parent_end="b.000001:600", child_start="c.000001:4"
    )
    view = ArchiveView("c", {1: one, 2: two}, [])
    # the parent from 100 to its branch point 600, then the child from its start to its end
    assert backlog_bytes(view, record("b.000001:100", 1)) == 500 + 296
    assert backlog_bytes(view, record("c.000001:100", 2)) == 200
    assert backlog_bytes(view, record("x.000001:4", 9)) is None  # not on the lineage


def test_gauges_are_absent_until_known() -> None:
    registry = CollectorRegistry()
    latest = Assessment(None)
    registry.register(BudgetGauges(lambda: latest, lambda: 0.0))
    assert registry.get_sample_value("backupd_restore_max_seconds") == 0.0
    assert registry.get_sample_value("backupd_restore_estimated_seconds") is None
    assert registry.get_sample_value("backupd_drill_phase_seconds", {"phase": "replay"}) is None
    latest = Assessment(phases(), "S1", 2_000_000, 7.5, "within")
    assert registry.get_sample_value("backupd_restore_estimated_seconds") == 7.5
    assert registry.get_sample_value("backupd_restore_backlog_bytes") == 2_000_000
    assert registry.get_sample_value("backupd_drill_phase_seconds", {"phase": "replay"}) == 3.0
    assert registry.get_sample_value("backupd_drill_replay_bytes_per_second") == 1_000_000


def test_newest_completed_set_reads_each_manifest_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    catalog = Catalog(store)
    old = SnapshotSet("20261101T000000Z-aaaaaa", "local", "h", "o", "0", state=COMPLETED)
    failed = SnapshotSet("20261102T000000Z-bbbbbb", "local", "h", "o", "0", state=FAILED)
    for made in (old, failed):
        catalog.put(made)
    newest = NewestSet()
    assert newest.find(catalog) == old
    newer = old.with_(set_id="20261103T000000Z-cccccc")
    catalog.put(newer)
    assert newest.find(catalog) == newer
    catalog.delete(newer.set_id)
    assert newest.find(catalog) == old


class StubArchiver:
    timeline = 2


def test_the_live_backlog_comes_from_the_servers_binlog_list(tmp_path: Path) -> None:
    import threading
    from types import SimpleNamespace

    from backupd.binlog.service import BinlogService
    from backupd.config import Config
    from backupd.service import ServiceContext

    config = Config.model_validate({"daemon": {"state_dir": str(tmp_path)}})
    service = BinlogService(
        ServiceContext(config, FileStore(tmp_path), CollectorRegistry(), threading.Event())
    )
    assert service.bytes_since("b.000001:100", 2) is None  # not archiving here
    service.archiver = StubArchiver()  # type: ignore[assignment]
    service._logs = [("b.000001", 1000), ("b.000002", 500), ("b.000003", 300)]
    service.progress = SimpleNamespace(file="b.000003", position=200)  # type: ignore[assignment]
    # 900 left of the set's file, all of the next, 200 archived of the third
    assert service.bytes_since("b.000001:100", 2) == 900 + 500 + 200
    assert service.bytes_since("b.000001:100", 1) is None  # another timeline: LIST instead
    assert service.bytes_since("b.000000:100", 2) is None  # purged from the server
    # a list polled before the newest writes: the archive's own progress is the floor
    # (a drill's assessment once reported a backlog of 0 after 2 MB were archived)
    service._logs = [("b.000001", 1000)]
    service.progress = SimpleNamespace(file="b.000001", position=5000)  # type: ignore[assignment]
    assert service.bytes_since("b.000001:1200", 2) == 3800
    service.progress = SimpleNamespace(file="b.000002", position=300)  # type: ignore[assignment]
    assert service.bytes_since("b.000001:100", 2) == 900 + 300
