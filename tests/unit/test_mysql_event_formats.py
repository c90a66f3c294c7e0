"""MySQL 5.7/8.0/8.4 event formats and checksum-free binlogs, with no server: streams built
byte by byte (tests/binlog_fakes.py says where each layout comes from) go through the
segmenter, the planner and the end-point walker. Transaction boundaries must be found after
XID (GTID and ANONYMOUS_GTID transactions) and after a compressed TRANSACTION_PAYLOAD, and a
stream where none can be found must be refused, never "restored" with zero transactions."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from backupd.binlog import events as ev
from backupd.binlog.segmenter import KIND_EOF, KIND_TX, Segment, Segmenter
from backupd.restore.endpoint import resolve
from backupd.restore.plan import Position, RestoreImpossible, SnapshotPoint, make_plan
from backupd.restore.plan import Segment as PlanSegment
from backupd.restore.target import parse_target
from tests.binlog_fakes import FakeFile, Txn, lenenc, payload_body

T0 = 1_700_000_000


def mysql_file(kinds: list[str], name: str = "binlog.000001") -> FakeFile:
    """One transaction per kind: `gtid`, `anonymous`, `compressed` (GTID + payload) or `ddl`
    (a MySQL 5.7 GTID and one statement)."""
    fake = FakeFile(name, T0, mysql=True)
    for kind in kinds:
        if kind == "ddl":
            fake.mysql_ddl()
            continue
        fake.mysql_transaction(
            [120, 40], compressed=kind == "compressed", anonymous=kind == "anonymous"
        )
    return fake


def cut(fake: FakeFile, flush: float = 1.0) -> list[Segment]:
    """Feed the dump stream one event at a time, 0.1 s apart, then let time pass."""
    seg = Segmenter(fake.name, 4, flush, 1 << 20)
    seg.checksum_alg = ev.CHECKSUM_CRC32 if fake.checksum else ev.CHECKSUM_OFF  # as declared
    out: list[Segment] = []
    now = 0.0
    for raw in fake.stream():
        now += 0.1
        out += seg.tick(now) + seg.feed(raw, now)
    return out + seg.tick(now + 100.0)


def write(tmp_path: Path, fake: FakeFile) -> Path:
    path = tmp_path / fake.name
    path.write_bytes(bytes(fake.data))
    return path


KINDS = [
    ["gtid", "gtid", "gtid"],
    ["anonymous", "anonymous"],
    ["compressed", "compressed", "compressed"],
    ["gtid", "compressed", "anonymous", "compressed"],
    ["ddl", "compressed", "ddl", "gtid"],
]


@pytest.mark.parametrize("kinds", KINDS)
def test_segmenter_cuts_at_every_mysql_transaction_end(kinds: list[str]) -> None:
    fake = mysql_file(kinds)
    segments = cut(fake)
    assert b"".join(s.data for s in segments) == bytes(fake.data)
    assert segments and all(s.kind == KIND_TX for s in segments)
    assert segments[-1].end == len(fake.data)  # the last transaction is not held back
    assert {s.end for s in segments} <= fake.boundaries


def test_mysql_heartbeats_are_not_placed_in_the_file() -> None:
    fake = mysql_file(["compressed"])
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    for raw in fake.stream():
        seg.feed(raw, 0.0)
    beat = ev.build_event(ev.MYSQL_HEARTBEAT_V2, b"\x01\x0ebinlog.000001\x00", 0)
    assert [(s.end, s.kind) for s in seg.feed(beat, 10.0)] == [(len(fake.data), KIND_TX)]


def test_a_compressed_transaction_is_cut_without_waiting_for_the_next_gtid() -> None:
    fake = mysql_file(["compressed"])
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    for raw in fake.stream():
        seg.feed(raw, 0.0)
    assert [(s.start, s.end) for s in seg.tick(10.0)] == [(0, len(fake.data))]


@pytest.mark.parametrize("kinds", KINDS)
def test_end_point_walker_counts_every_mysql_transaction(tmp_path: Path, kinds: list[str]) -> None:
    fake = mysql_file(kinds)
    path = write(tmp_path, fake)
    start = Position(fake.name, min(fake.boundaries))
    end = resolve([path], start, "", parse_target("latest"), "mysql")
    assert end.transactions == len(kinds)
    assert end.position == Position(fake.name, len(fake.data))
    third = sorted(fake.boundaries)[2]
    at_coordinate = resolve([path], start, "", parse_target(f"{fake.name}:{third}"), "mysql")
    assert at_coordinate.transactions == 2


def test_time_target_inside_compressed_transactions(tmp_path: Path) -> None:
    fake = mysql_file(["compressed"] * 4)
    path = write(tmp_path, fake)
    start = Position(fake.name, min(fake.boundaries))
    target = parse_target(_iso(T0 + 2))
    end = resolve([path], start, "", target, "mysql")
    assert end.transactions == 2 and end.commit_time == T0 + 2


def test_planner_segmenter_and_walker_agree_on_a_compressed_stream(tmp_path: Path) -> None:
    fake = mysql_file(["compressed"] * 5)
    segments = [
        PlanSegment(
            f"{s.file}/{s.start}-{s.end}",
            s.file,
            s.start,
            s.end,
            s.first_time,
            s.last_time,
            s.first_gtid,
            s.last_gtid,
            s.kind == KIND_EOF,
        )
        for s in cut(fake, flush=0.15)
    ]
    assert len(segments) > 1
    snapshot_at = sorted(fake.boundaries)[1]  # after the first transaction
    snapshot = SnapshotPoint("s", float(T0 + 1), Position(fake.name, snapshot_at), "")
    plan = make_plan(parse_target("latest"), [snapshot], segments)
    assert plan.segments[-1].end == len(fake.data)
    rebuilt = tmp_path / fake.name
    rebuilt.write_bytes(bytes(fake.data[: plan.segments[-1].end]))
    end = resolve([rebuilt], plan.start, "", parse_target("latest"), "mysql")
    assert end.transactions == 4


def test_a_stream_without_any_boundary_is_refused(tmp_path: Path) -> None:
    """A GTID, then events this walker cannot read as a transaction's end (an unknown type):
    `latest` used to plan zero transactions and report success."""
    fake = FakeFile("binlog.000001", T0, mysql=True)
    start = len(fake.data)
    fake.mysql_transaction([50])
    gtid_end = fake.events[-5][0] + len(fake.events[-5][1])  # GTID, then BEGIN..XID
    fake.data = fake.data[:gtid_end]
    fake.add(99, b"an event of a type from the future")
    fake.add(99, b"and another")
    path = write(tmp_path, fake)
    with pytest.raises(RestoreImpossible, match="no transaction boundary found in the 3 event"):
        resolve([path], Position(fake.name, start), "", parse_target("latest"), "mysql")


def test_an_idle_archive_after_the_snapshot_is_zero_transactions(tmp_path: Path) -> None:
    fake = FakeFile("binlog.000001", T0, mysql=True)
    fake.rotate("binlog.000002")
    path = write(tmp_path, fake)
    end = resolve([path], Position(fake.name, 4), "", parse_target("latest"), "mysql")
    assert end.transactions == 0


def test_payload_stored_uncompressed_and_damaged_payloads(tmp_path: Path) -> None:
    inner = ev.build_event(ev.XID, struct.pack("<Q", 1), 0, T0, checksum=False)
    plain = ev.build_event(ev.MYSQL_TRANSACTION_PAYLOAD, payload_body(inner, False), 100)
    assert list(ev.payload_events(plain, ev.CHECKSUM_CRC32)) == [inner]
    packed = payload_body(inner)
    junk = b"not a zstd frame"
    garbled = lenenc(2) + lenenc(1) + lenenc(0) + lenenc(1) + lenenc(1) + lenenc(len(junk))
    with pytest.raises(ev.EventError, match="does not decompress"):
        list(ev.payload_events(ev.build_event(40, garbled + b"\0" + junk, 100), 1))
    truncated = packed[:-1]
    with pytest.raises(ev.EventError, match="payload says"):
        list(ev.payload_events(ev.build_event(40, truncated, 100), ev.CHECKSUM_CRC32))


# -- binlog_checksum=NONE ----------------------------------------------------------------


def none_file(count: int = 3) -> FakeFile:
    fake = FakeFile("mysql-bin.000003", T0, checksum=False)
    for n in range(count):
        fake.transaction(Txn([80 + n]) if n % 2 == 0 else Txn([], ddl=True))
    fake.rotate("mysql-bin.000004")
    return fake


def test_segmenter_archives_a_checksum_free_stream() -> None:
    fake = none_file()
    segments = cut(fake)
    assert b"".join(s.data for s in segments) == bytes(fake.data)
    assert segments[-1].kind == KIND_EOF
    assert segments[0].first_gtid == "0-1-1" and segments[-1].last_gtid == "0-1-3"


def test_a_checksum_free_stream_still_verifies_the_format_description_crc() -> None:
    fake = none_file()
    stream = fake.stream()
    damaged = bytearray(stream[1])  # the FDE: its CRC32 is there even with NONE
    damaged[30] ^= 0xFF
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    seg.checksum_alg = ev.CHECKSUM_OFF
    seg.feed(stream[0], 0.0)
    with pytest.raises(ev.EventError, match="CRC32"):
        seg.feed(bytes(damaged), 0.0)


def test_end_point_walker_reads_a_checksum_free_file(tmp_path: Path) -> None:
    fake = none_file(4)
    path = write(tmp_path, fake)
    end = resolve([path], Position(fake.name, 4), "", parse_target("latest"), "mariadb")
    assert end.transactions == 4 and end.gtid == "0-1-4"


def _iso(ts: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
