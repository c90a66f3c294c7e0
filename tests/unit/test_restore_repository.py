"""The repository as the planner and verify see it: overlaps, old manifests, chain problems."""

from __future__ import annotations

import hashlib
from pathlib import Path

from backupd.binlog import layout
from backupd.binlog.extent import Extent
from backupd.config import Config
from backupd.restore import repository
from backupd.restore.verify import verify
from backupd.snapshot.catalog import COMPLETED, Catalog, SnapshotSet
from backupd.storage.filestore import FileStore

F1, F2, F3 = "mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"


def put_segment(store: FileStore, file: str, start: int, end: int, kind: str = "tx") -> str:
    raw = bytes((start + i) % 251 for i in range(end - start))
    digest = hashlib.sha256(raw).hexdigest()
    seg = layout.SegmentKey(
        "1", Extent(file, start, end, 10, 20, "", "", kind), digest, digest, "bin"
    )
    store.put(seg.key, raw)
    return seg.key


def test_compacted_segment_wins_over_the_ones_it_replaced(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    put_segment(store, F1, 0, 100)
    put_segment(store, F1, 100, 200, "eof")
    compacted = put_segment(store, F1, 0, 200, "eof")
    repo = repository.load(store)
    assert [s.key for s in repo.segments] == [compacted]


def test_old_manifests_without_identity_still_load(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    put_segment(store, F1, 0, 100)
    old = SnapshotSet("a", "local", "h", "o", "0", state=COMPLETED, coordinate=f"{F1}:50")
    crash = SnapshotSet(
        "b", "local", "h", "o", "0", state=COMPLETED, consistency="crash", coordinate=f"{F1}:60"
    )
    Catalog(store).put(old)
    Catalog(store).put(crash)
    points = {p.set_id: p for p in repository.load(store).points}
    assert points["a"].usable and not points["b"].usable
    assert "crash" in points["b"].why_unusable
    assert repository.load(store, allow_crash=True).points[1].usable


def test_verify_names_holes_missing_files_and_bad_objects(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    put_segment(store, F1, 0, 100)
    put_segment(store, F1, 150, 200, "eof")  # a hole 100..150
    bad = put_segment(store, F3, 0, 100)  # F2 is missing
    (tmp_path / "repo" / bad).write_bytes(b"garbage")
    Catalog(store).put(
        SnapshotSet("a", "local", "h", "o", "0", state=COMPLETED, coordinate=f"{F1}:4")
    )
    config = Config.model_validate({"snapshot": {"local": {"directory": str(tmp_path / "images")}}})
    report = verify(config, store)
    text = "\n".join(report.problems)
    assert f"{F1} bytes 100..150 missing" in text
    assert "between number 1 and 3" in text
    assert bad in text
    assert report.objects_checked == report.objects_total == 3
    assert verify(config, store, sample=1).objects_checked == 1
