"""The binlog reader against an in-memory BinlogSource: resume point, dump, cut, spool."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from backupd.binlog.archiver import Alarms, Archiver
from backupd.binlog.client import StreamEnded
from backupd.binlog.metrics import BinlogMetrics
from backupd.binlog.spool import Spool
from backupd.binlog.state import Progress
from backupd.binlog.timeline import ArchiveEnd, ServerView
from backupd.binlog.uploader import Target
from backupd.config import BinlogSection, MysqlSection
from backupd.storage.filestore import FileStore
from tests.binlog_fakes import FakeBinlogSource, FakeFile, Txn


def test_the_reader_spools_the_whole_file_from_a_fake_source(tmp_path: Path) -> None:
    fake = FakeFile("mysql-bin.000001")
    for _ in range(30):
        fake.transaction(Txn([400, 400]))
    source = FakeBinlogSource(fake)
    stop = threading.Event()
    (tmp_path / "spool").mkdir()
    spool = Spool(tmp_path / "spool", 1 << 20, stop)
    store = FileStore(tmp_path / "repo")
    archiver = Archiver(
        MysqlSection(),
        BinlogSection(segment_max_bytes=4096, spool_max_bytes=1 << 20),
        lambda: store,
        "c1",
        Target(lambda: store, "", "zstd", 3),
        spool,
        lambda entry: True,
        Progress(),
        BinlogMetrics(CollectorRegistry()),
        Alarms(),
        stop,
        connect=lambda section: source,
        probe=SameServer(),
    )
    archiver._spooler.start()
    try:
        with pytest.raises(StreamEnded):
            archiver._stream_once()
        archiver._drain()
    finally:
        stop.set()
    assert source.dumps == [("mysql-bin.000001", 4)] and source.closed
    entries = spool.entries()
    assert len(entries) > 1 and entries[0].start == 0  # a file's first segment has the magic
    assert all(a.end == b.start for a, b in itertools.pairwise(entries))
    assert entries[-1].end in fake.boundaries  # cut only at transaction boundaries
    assert archiver.timeline == 1 and archiver.target.stream == "c1/tl000001"


class SameServer:
    """A ServerProbe for a server that is and stays the one that wrote the archive."""

    def identity(self) -> str:
        return "1"

    def view(
        self, identity: str, logs: list[tuple[str, int]], end: ArchiveEnd, head: bytes | None
    ) -> ServerView:
        return ServerView(identity, logs, None, 0.0, None)

    def locate_after(self, logs: list[tuple[str, int]], archived: dict[int, int]) -> str:
        raise AssertionError("no branch expected")
