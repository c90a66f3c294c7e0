"""The spool: durable, bounded (a full spool blocks the writer, never drops), recoverable."""

from __future__ import annotations

import threading
from pathlib import Path

from backupd.binlog.extent import Extent
from backupd.binlog.segmenter import Segment
from backupd.binlog.spool import Spool


def segment(start: int, size: int, file: str = "mysql-bin.000001") -> Segment:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    return Segment(Extent(file, start, start + size, 1, 2, "0-1-1", "0-1-2", "tx"), data)


def test_full_spool_blocks_until_space_frees_and_drops_nothing(tmp_path: Path) -> None:
    stop = threading.Event()
    spool = Spool(tmp_path, 3000, stop)
    spool.recover()
    first = spool.write(segment(0, 2000))
    assert first is not None and spool.used == 2000
    written: list[object] = []
    writer = threading.Thread(target=lambda: written.append(spool.write(segment(2000, 2000))))
    writer.start()
    writer.join(0.5)
    assert writer.is_alive() and spool.full  # waiting for space, not dropping
    spool.remove(first)
    writer.join(5)
    assert not writer.is_alive() and written[0] is not None
    assert not spool.full and spool.used == 2000
    assert [e.start for e in spool.entries()] == [2000]


def test_a_segment_larger_than_the_spool_is_let_in_when_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000, threading.Event())
    spool.recover()
    entry = spool.write(segment(0, 5000))
    assert entry is not None and entry.read() == segment(0, 5000).data


def test_recover_keeps_whole_entries_and_removes_torn_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, threading.Event())
    spool.recover()
    kept = spool.write(segment(0, 700))
    torn = spool.write(segment(700, 300))
    assert kept is not None and torn is not None
    torn.path.write_bytes(b"short")  # cannot happen after fsync + rename, but never upload it
    (tmp_path / ".tmp-half-written").write_bytes(b"x")
    again = Spool(tmp_path, 1 << 20, threading.Event())
    entries = again.recover()
    assert [(e.start, e.end, e.first_gtid, e.kind) for e in entries] == [(0, 700, "0-1-1", "tx")]
    assert again.used == 700
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.path.name]


def test_stop_releases_a_blocked_writer(tmp_path: Path) -> None:
    stop = threading.Event()
    spool = Spool(tmp_path, 1000, stop)
    spool.recover()
    assert spool.write(segment(0, 900)) is not None
    result: list[object] = ["unset"]
    writer = threading.Thread(target=lambda: result.__setitem__(0, spool.write(segment(900, 900))))
    writer.start()
    stop.set()
    writer.join(5)
    assert result[0] is None and spool.used == 900
