"""Prune acts only on a complete listing: any unreadable manifest, failing LIST or key the
layout cannot name stops every deletion of the run (sets and binlog files alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backupd.binlog.retention import ArchivedFile, deletable
from backupd.config import RetentionSection
from backupd.errors import StorageError
from backupd.snapshot.catalog import COMPLETED, Catalog, SnapshotSet
from backupd.snapshot.prune import prune
from backupd.storage.filestore import FileStore

KEEP_ONE = RetentionSection(keep_last=1, hourly=0, daily=0, weekly=0, monthly=0, yearly=0)
SEGMENT = "000000000000-000000000400_1-2_~_tx_" + "a" * 64 + "_" + "b" * 64 + ".zst"


class NoVolumes:
    """Sets below have no volumes, so a provider is never asked to delete anything."""

    name = "local"

    def delete(self, record: SnapshotSet) -> list[str]:
        raise AssertionError("no provider deletion expected")


def a_set(set_id: str, started_at: float, coordinate: str) -> SnapshotSet:
    return SnapshotSet(
        set_id, "local", "h", "me", "0", state=COMPLETED, started_at=started_at,
        coordinate=coordinate, server_identity="1",
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path)
    catalog = Catalog(store)
    catalog.put(a_set("20260101T000000Z-aaaaaa", 1.0, "mysql-bin.000003:4"))
    catalog.put(a_set("20260102T000000Z-bbbbbb", 2.0, "mysql-bin.000005:4"))
    for n in range(1, 7):
        store.put(f"binlog/1/mysql-bin.{n:06d}/{SEGMENT}", b"x")
    return store


def run(store: FileStore, dry_run: bool = False) -> dict[str, Any]:
    return prune(Catalog(store), NoVolumes(), KEEP_ONE, "me", dry_run=dry_run, now=3.0)  # type: ignore[arg-type]


def test_a_complete_listing_prunes(repo: FileStore) -> None:
    doc = run(repo, dry_run=True)
    assert doc["refused"] is None and doc["delete"] == ["20260101T000000Z-aaaaaa"]
    assert doc["binlog_files"] == ["1/mysql-bin.000001", "1/mysql-bin.000002",
                                   "1/mysql-bin.000003", "1/mysql-bin.000004"]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("snapshots/20260101T000000Z-aaaaaa.json", "unreadable_manifest"),
        ("snapshots/20260102T000000Z-bbbbbb.json", "unreadable_manifest"),
        ("binlog/1/mysql-bin.000002/not-a-segment.zst", "unparsable_object"),
        ("binlog/stray", "unparsable_object"),
    ],
)
def test_any_doubt_refuses_every_deletion(repo: FileStore, damage: str, kind: str) -> None:
    repo.put(damage, b"{garbled")
    before = sorted(info.key for info in repo.list(""))
    for dry_run in (True, False):
        doc = run(repo, dry_run)
        assert doc["refused"]["code"] == "prune_refused" and doc["refused"]["kinds"] == [kind]
        assert doc["delete"] == doc["deleted"] == doc["binlog_files"] == []
        assert any(damage in reason for reason in doc["refused"]["reasons"])
    assert sorted(info.key for info in repo.list("")) == before


def test_a_set_whose_coordinate_does_not_parse_refuses(repo: FileStore) -> None:
    Catalog(repo).put(a_set("20260103T000000Z-cccccc", 3.0, "mysql-bin.000006"))
    doc = run(repo, dry_run=True)
    assert doc["refused"]["kinds"] == ["unparsable_object"]
    assert "20260103T000000Z-cccccc" in doc["refused"]["message"]


def test_a_failing_list_refuses(repo: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(prefix: str) -> Any:
        raise StorageError("list timed out")

    monkeypatch.setattr(repo, "list", broken)
    doc = run(repo)
    assert (
        doc["refused"]["kinds"] == ["listing_error"]
        and "list timed out" in doc["refused"]["message"]
    )


def test_a_set_without_identity_among_several_servers_keeps_everything() -> None:
    files = [ArchivedFile("1", "mysql-bin.000001"), ArchivedFile("2", "mysql-bin.000001")]
    anonymous = SnapshotSet("s", "local", "h", "o", "0", coordinate="mysql-bin.000002:4")
    assert deletable([anonymous], files) == []
    assert deletable([anonymous], files[:1]) == files[:1]  # one server: it is that server's
