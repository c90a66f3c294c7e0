"""Compaction and fetch on a file:// repository with synthetic segments."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backupd.binlog import layout
from backupd.binlog.compactor import compact_file
from backupd.binlog.fetch import fetch
from backupd.binlog.recent import RecentSegments
from backupd.binlog.segmenter import Segmenter
from backupd.binlog.spool import Spool
from backupd.binlog.uploader import Target, encode
from backupd.errors import ArchiveCorrupt
from backupd.storage import ObjectStore
from backupd.storage.filestore import FileStore
from tests.binlog_fakes import FakeFile, Txn


def archive(
    tmp_path: Path,
    store: ObjectStore,
    fake: FakeFile,
    max_bytes: int = 300,
    recent: RecentSegments | None = None,
    flush_seconds: float = 0.0,
) -> int:
    """Segment, spool and upload `fake` as the daemon would; returns the segment count."""
    seg = Segmenter(fake.name, 4, flush_seconds, max_bytes)
    spool = Spool(tmp_path / "spool", max(1 << 20, 4 * max_bytes), threading.Event())
    spool.recover()
    count = 0
    for raw in fake.stream():
        for segment in seg.feed(raw, 1.0):
            entry = spool.write(segment)
            assert entry is not None
            encoded = encode("1", entry.extent, entry.read(), "zstd", 3)
            store.put(encoded.key.key, encoded.body)
            if recent is not None:
                recent.keep(encoded.key.raw_sha256, entry.read())
            spool.remove(entry)
            count += 1
    return count


def test_compaction_replaces_segments_with_one_verified_object(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    fake = FakeFile("mysql-bin.000001")
    for n in range(20):
        fake.transaction(Txn([50 + n]))
    fake.rotate("mysql-bin.000002")
    assert archive(tmp_path, store, fake) > 5
    key = compact_file(Target(lambda: store, "1", "zstd", 3), "1", fake.name)
    assert key is not None and key.start == 0 and key.end == len(fake.data) and key.kind == "eof"
    keys = [info.key for info in store.list("binlog/1/mysql-bin.000001/")]
    assert sorted(keys) == sorted([key.key, layout.manifest_key("1", fake.name)])
    manifest = json.loads(store.get(layout.manifest_key("1", fake.name)))
    assert len(manifest["replaced"]) > 5
    assert compact_file(Target(lambda: store, "1", "zstd", 3), "1", fake.name) is None  # idempotent
    files = fetch(store, tmp_path / "out", "1")
    assert (tmp_path / "out" / fake.name).read_bytes() == bytes(fake.data)
    assert files[0].closed and files[0].segments == 1


def test_open_file_is_not_compacted_and_fetch_refuses_corruption(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    fake = FakeFile("mysql-bin.000003")
    for _n in range(10):
        fake.transaction(Txn([80]))
    archive(tmp_path, store, fake)
    assert compact_file(Target(lambda: store, "1", "zstd", 3), "1", fake.name) is None
    victim = next(info.key for info in store.list("binlog/1/") if "000000000000-" not in info.key)
    path = tmp_path / "repo" / victim
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArchiveCorrupt, match="sha256"):
        fetch(store, tmp_path / "out", "1")
    assert not (tmp_path / "out" / fake.name).exists()


def test_backupctl_binlog_fetch_without_a_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backupd import ctl

    config = tmp_path / "backupd.toml"
    config.write_text(f'[storage]\nurl = "file://{tmp_path / "repo"}"\n')
    args = ["--config", str(config), "--json", "binlog", "fetch", "--dest", str(tmp_path / "out")]
    assert ctl.main(args) == 2  # nothing archived yet: a clear usage error
    assert "archives for: none" in capsys.readouterr().err
    store = FileStore(tmp_path / "repo")
    files = [FakeFile("mysql-bin.000001"), FakeFile("mysql-bin.000002")]
    for fake in files:
        for n in range(5):
            fake.transaction(Txn([40 + n]))
    files[0].rotate("mysql-bin.000002")
    for fake in files:
        archive(tmp_path / fake.name, store, fake)
    assert ctl.main([*args, "--from", "mysql-bin.000002"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [f["file"] for f in doc["files"]] == ["mysql-bin.000002"]
    assert doc["files"][0]["closed"] is False and doc["server"] == "1"
    assert (tmp_path / "out" / "mysql-bin.000002").read_bytes() == bytes(files[1].data)
    assert not (tmp_path / "out" / "mysql-bin.000001").exists()


class CountingStore(FileStore):
    gets = 0

    def get(self, key: str) -> bytes:
        self.gets += 1
        return super().get(key)


def test_compaction_takes_recently_uploaded_segments_from_memory(tmp_path: Path) -> None:
    """What the daemon just uploaded is not downloaded again (a GET per segment, each file)."""
    store = CountingStore(tmp_path / "repo")
    fake = FakeFile("mysql-bin.000001")
    for n in range(20):
        fake.transaction(Txn([50 + n]))
    fake.rotate("mysql-bin.000002")
    recent = RecentSegments()
    segments = archive(tmp_path, store, fake, recent=recent)
    key = compact_file(Target(lambda: store, "1", "zstd", 3), "1", fake.name, recent)
    assert key is not None and store.gets == 0 and recent.size == 0
    fetch(store, tmp_path / "out", "1")
    assert (tmp_path / "out" / fake.name).read_bytes() == bytes(fake.data)
    evicted = RecentSegments(max_bytes=200)  # too small: what it lost is downloaded
    store2 = CountingStore(tmp_path / "repo2")
    (tmp_path / "second").mkdir()
    archive(tmp_path / "second", store2, fake, recent=evicted)
    assert compact_file(Target(lambda: store2, "1", "zstd", 3), "1", fake.name, evicted)
    assert 0 < store2.gets < segments + 1
