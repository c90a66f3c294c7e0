"""Timeline decisions (pure) and the archive reader: tables and a property test.

The property: over random histories of rotate / reset / promote / failover / crash events,
a decision never lets a plan cross a branch the server's data does not provably contain, and
continuity is kept exactly when nothing broke.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from backupd.binlog import layout
from backupd.binlog.archive import Archive, History, gtid_position, select
from backupd.binlog.extent import Extent
from backupd.binlog.timeline import ArchiveEnd, ServerView, decide
from backupd.storage.filestore import FileStore

SHA = "ab" * 32


def end(**kw: object) -> ArchiveEnd:
    base: dict[str, object] = dict(
        timeline=1,
        identity="1",
        file="mysql-bin.000003",
        position=500,
        closed=False,
        boundary="mysql-bin.000003:500",
        gtid={0: 50},
        last_time=1000,
    )
    base.update(kw)
    return ArchiveEnd(**base)  # type: ignore[arg-type]


def server(**kw: object) -> ServerView:
    base: dict[str, object] = dict(
        identity="1",
        logs=[("mysql-bin.000003", 800)],
        gtid={0: 60},
        started_at=900.0,
        head_matches=True,
    )
    base.update(kw)
    return ServerView(**base)  # type: ignore[arg-type]


def test_same_server_further_on_continues() -> None:
    assert not decide(end(), server()).branch
    assert not decide(end(), server(logs=[("mysql-bin.000004", 10)])).branch  # purged: a gap


def test_reset_master_on_the_running_server() -> None:
    found = decide(end(), server(logs=[("mysql-bin.000001", 300)], gtid={0: 3}))
    assert (found.branch, found.reason, found.parent_end) == (True, "reset", "")
    same_name = decide(end(), server(head_matches=False, gtid={0: 3}))
    assert same_name.reason == "reset"


def test_restored_server_put_in_service_is_a_promotion_never_crossable() -> None:
    found = decide(end(), server(logs=[("mysql-bin.000003", 900)], head_matches=False,
                                 gtid={0: 40}, started_at=2000.0))  # fmt: skip
    assert (found.reason, found.parent_end) == ("promotion", "")


def test_failover_crossable_only_when_the_gtid_position_contains_the_end() -> None:
    ok = decide(end(), server(identity="2", logs=[("mysql-bin.000009", 4)], gtid={0: 55}))
    assert (ok.reason, ok.parent_end) == ("failover", "mysql-bin.000003:500")
    lagging = decide(end(), server(identity="2", gtid={0: 49}))
    assert (lagging.reason, lagging.parent_end) == ("failover", "")
    unknown = decide(end(), server(identity="2", gtid=None))
    assert unknown.parent_end == ""


def test_lost_tail_is_a_rewind() -> None:
    shorter = decide(end(), server(logs=[("mysql-bin.000003", 400)]))
    assert (shorter.reason, shorter.parent_end) == ("rewind", "")
    behind = decide(end(), server(gtid={0: 45}))
    assert behind.reason == "rewind"


EVENTS = st.sampled_from(["write", "rotate", "reset", "promote", "failover", "crash"])


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, min_size=1, max_size=12))
def test_property_branches_exactly_when_continuity_breaks(events: list[str]) -> None:
    """Simulate one server history against an archive that is caught up before each event."""
    identity, number, size, seq, started = "1", 1, 4, 0, 0.0
    archived_seq, now = 0, 10
    for event in events:
        now += 10
        archive_end = end(
            identity=identity, file=f"mysql-bin.{number:06d}", position=size,
            boundary=f"mysql-bin.{number:06d}:{size}", gtid={0: archived_seq} if seq else {},
            last_time=now - 5,
        )  # fmt: skip
        broke, containing = False, True
        if event == "write":
            size, seq = size + 100, seq + 1
        elif event == "rotate":
            number, size = number + 1, 4
        elif event == "reset":
            number, size, seq, broke, containing = 1, 4, 0, True, False
        elif event == "promote":  # a restored copy: behind the archive, restarted
            number, size, broke, started = 1, 4, True, float(now)
            seq, containing = max(0, seq - 1), seq == 0
        elif event == "failover":  # a replica that had everything, new identity
            identity, number, size, broke = str(int(identity) + 1), 1, 4, True
        elif event == "crash":  # sync_binlog=0: the tail is lost
            size, started = max(4, size - 50), float(now)
            broke = size < archive_end.position
            seq, containing = (max(0, seq - 1), False) if broke and seq else (seq, True)
        view = server(
            identity=identity, logs=[(f"mysql-bin.{number:06d}", size)],
            gtid={0: seq} if seq else {}, started_at=started,
            head_matches=None if event in ("rotate",) else event not in ("reset", "promote"),
        )  # fmt: skip
        if event == "rotate":  # the old file is still listed before the new one
            view = server(
                identity=identity,
                logs=[(archive_end.file, archive_end.position), (f"mysql-bin.{number:06d}", 4)],
                gtid={0: seq} if seq else {}, started_at=started, head_matches=True,
            )  # fmt: skip
        decision = decide(archive_end, view)
        if archive_end.gtid and decision.branch and not containing:
            assert decision.parent_end == "", (event, decision)
        if not broke and event != "failover":
            assert not decision.branch, (event, decision)
        if broke and archive_end.gtid:
            assert decision.branch, (event, decision)
        archived_seq = seq  # the archive catches up before the next event


def seg(
    stream: str, file: str, start: int, end_: int, kind: str = "tx", gtid: str = ""
) -> layout.SegmentKey:
    return layout.SegmentKey(
        stream, Extent(file, start, end_, 10, 20, gtid, gtid, kind), SHA, SHA, "bin"
    )


def test_keys_of_two_timelines_never_collide_and_legacy_keys_still_parse() -> None:
    one = seg(layout.timeline_stream("c1", 1), "mysql-bin.000001", 0, 100)
    two = seg(layout.timeline_stream("c1", 2), "mysql-bin.000001", 0, 100)
    assert one.key != two.key and one.key.startswith("binlog/c1/tl000001/mysql-bin.000001/")
    assert layout.parse_segment(one.key) == one
    legacy = seg("1", "mysql-bin.000001", 0, 100)
    assert legacy.key.startswith("binlog/1/mysql-bin.000001/")
    assert layout.parse_segment(legacy.key) == legacy
    assert layout.parse_history(layout.history_key("c1", 2)) == ("c1", 2)
    assert layout.parse_segment(layout.history_key("c1", 2)) is None


def test_reader_adopts_a_legacy_stream_and_reads_each_timeline_apart(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    legacy = seg("1", "mysql-bin.000001", 0, 100, "tx", "0-1-5")
    store.put(legacy.key, b"x")
    archive = Archive(store, "c1")
    archive.begin(History(1, "1", "migration", "1", 100.0))
    view = archive.read()
    archive.begin(archive.new_history(view, "reset", "1", parent=1))
    new = seg(layout.timeline_stream("c1", 2), "mysql-bin.000001", 0, 40, "tx", "0-1-2")
    store.put(new.key, b"y")
    view = archive.read()
    assert [s.key for s in view.get(1).segments] == [legacy.key]
    assert [s.key for s in view.get(2).segments] == [new.key]
    assert view.get(1).end_gtid() == {0: 5} and view.get(2).end() == ("mysql-bin.000001", 40, "tx")
    assert [t.id for t in view.lineage(2)] == [1, 2]
    assert select(store).timeline is not None and select(store).stream == new.stream
    assert select(store, "c1", 1).stream == "1"
    try:
        archive.begin(History(2, "x", "reset", "1", 1.0))
    except Exception as exc:  # never replaced
        assert "exists" in str(exc)
    else:
        raise AssertionError("a history object was replaced")


def test_broken_history_objects_are_reported_not_skipped(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "repo")
    store.put(layout.history_key("c1", 1), b"{not json")
    view = Archive(store, "c1").read()
    assert view.broken and not view.timelines


def test_gtid_position_parsing() -> None:
    assert gtid_position("0-1-10, 1-2-7") == {0: 10, 1: 7}
    assert gtid_position("") == {}
