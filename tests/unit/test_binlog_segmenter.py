"""The segmenter: any event sequence, cut anywhere, reassembles into the exact file."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupd.binlog import events as ev
from backupd.binlog.segmenter import KIND_EOF, KIND_MID, KIND_TX, ChainError, Segment, Segmenter
from tests.binlog_fakes import FakeFile, Txn, framed, heartbeat

txns = st.lists(
    st.builds(
        Txn,
        rows=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=4),
        ddl=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def build(transactions: list[Txn], rotate: bool = False, checksum: bool = True) -> FakeFile:
    fake = FakeFile("mysql-bin.000007", checksum=checksum)
    for txn in transactions:
        fake.transaction(txn)
    if rotate:
        fake.rotate("mysql-bin.000008")
    return fake


def run(seg: Segmenter, stream: list[bytes], gaps: list[float]) -> list[Segment]:
    """Feed `stream`, advancing a fake clock by `gaps` (cycled) and ticking in between."""
    out: list[Segment] = []
    now = 0.0
    for index, raw in enumerate(stream):
        now += gaps[index % len(gaps)]
        out += seg.tick(now)
        out += seg.feed(raw, now)
    return out


def run_batches(seg: Segmenter, stream: list[bytes], sizes: list[int]) -> list[Segment]:
    """Feed `stream` through feed_many in batches of the given sizes (cycled)."""
    out: list[Segment] = []
    index, now = 0, 0.0
    while index < len(stream):
        size = sizes[index % len(sizes)]
        now += 0.05
        out += seg.feed_many(stream[index : index + size], now)
        index += size
    return out


def reassemble(segments: list[Segment], file: str) -> bytes:
    data = bytearray()
    for segment in segments:
        if segment.file != file:
            continue
        assert segment.start == len(data), "segments must join without a hole or overlap"
        assert segment.end - segment.start == len(segment.data)
        data += segment.data
    return bytes(data)


@settings(max_examples=150, deadline=None)
@given(
    transactions=txns,
    max_bytes=st.integers(min_value=64, max_value=20000),
    flush=st.floats(min_value=0.01, max_value=5),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=5),
    rotate=st.booleans(),
)
def test_any_stream_reassembles_exactly(
    transactions: list[Txn], max_bytes: int, flush: float, gaps: list[float], rotate: bool
) -> None:
    fake = build(transactions, rotate)
    seg = Segmenter(fake.name, 4, flush, max_bytes)
    segments = run(seg, fake.stream(), gaps) + seg.tick(1e9)
    data = reassemble(segments, fake.name)
    if rotate:
        assert data == bytes(fake.data)
        assert segments[-1].kind == KIND_EOF and seg.file == "mysql-bin.000008"
    else:
        assert bytes(fake.data).startswith(data)
        assert len(data) in fake.boundaries  # everything flushed up to a transaction end
    for segment in segments:
        if segment.kind == KIND_TX:
            assert segment.end in fake.boundaries
        if segment.kind != KIND_MID:
            assert segment.end in fake.boundaries or segment.kind == KIND_EOF


def assert_kill_and_resume_exact(
    fake: FakeFile,
    max_bytes: int,
    kill_after: int,
    feed: Callable[[Segmenter, list[bytes]], list[Segment]],
) -> None:
    """Feed up to `kill_after` events, lose the unflushed tail, resume from what was cut:
    the file reassembles exactly and every `tx` cut sits on a transaction boundary."""
    stream = fake.stream()
    kept = feed(Segmenter(fake.name, 4, 1.0, max_bytes), stream[: min(kill_after, len(stream))])
    durable = reassemble(kept, fake.name)
    if kept and kept[-1].kind == KIND_EOF:
        assert durable == bytes(fake.data)  # the whole file was archived before the kill
        return
    position = len(durable) if durable else 4
    inside = bool(kept) and kept[-1].kind == KIND_MID
    second = Segmenter(fake.name, position, 1.0, max_bytes, inside)
    rest = feed(second, fake.stream(position))
    assert reassemble(kept + rest, fake.name) == bytes(fake.data)
    for segment in kept + rest:
        if segment.kind == KIND_TX:
            assert segment.end in fake.boundaries


@settings(max_examples=150, deadline=None)
@given(
    transactions=txns,
    max_bytes=st.integers(min_value=64, max_value=20000),
    kill_after=st.integers(min_value=0, max_value=200),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=5),
)
def test_killed_and_resumed_anywhere_gives_no_gap_and_no_duplicate(
    transactions: list[Txn], max_bytes: int, kill_after: int, gaps: list[float]
) -> None:
    """Kill after any event (losing the unflushed tail), resume from what was cut."""
    assert_kill_and_resume_exact(
        build(transactions, rotate=True), max_bytes, kill_after, lambda seg, s: run(seg, s, gaps)
    )


@settings(max_examples=150, deadline=None)
@given(
    transactions=txns,
    max_bytes=st.integers(min_value=64, max_value=20000),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=5),
    kill_after=st.integers(min_value=0, max_value=200),
)
def test_batches_reassemble_exactly_and_resume(
    transactions: list[Txn], max_bytes: int, sizes: list[int], kill_after: int
) -> None:
    """The batch path (feed_many) cuts valid segments; a resume after any batch is exact."""
    assert_kill_and_resume_exact(
        build(transactions, rotate=True),
        max_bytes,
        kill_after,
        lambda seg, s: run_batches(seg, s, sizes),
    )


@settings(max_examples=150, deadline=None)
@given(
    transactions=txns,
    max_bytes=st.integers(min_value=64, max_value=20000),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=5),
)
def test_batch_path_cuts_exactly_like_one_by_one(
    transactions: list[Txn], max_bytes: int, sizes: list[int]
) -> None:
    fake = build(transactions, rotate=True)
    stream = fake.stream()
    single = Segmenter(fake.name, 4, 1.0, max_bytes)
    one_by_one = [seg for raw in stream for seg in single.feed(raw, 0.0)]
    batched = Segmenter(fake.name, 4, 1.0, max_bytes)
    out: list[Segment] = []
    index = 0
    while index < len(stream):
        size = sizes[index % len(sizes)]
        out += batched.feed_many(stream[index : index + size], 0.0)
        index += size
    assert out == one_by_one


def test_batch_path_refuses_a_bad_crc_inside_a_transaction() -> None:
    fake = build([Txn([100, 100, 100])])
    stream = fake.stream()
    bad = bytearray(stream[5])  # a row event in the middle of the transaction
    bad[30] ^= 0x01
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    with pytest.raises(ev.EventError, match="CRC32"):
        seg.feed_many([*stream[:5], bytes(bad), *stream[6:]], 0.0)


def run_packets(seg: Segmenter, wire: bytes, chunk: int) -> list[Segment]:
    """The archiver's loop over a receive buffer filled `chunk` bytes at a time: the hot
    path (feed_packets) first, one event by the ordinary path when it takes none."""
    out: list[Segment] = []
    buffer, offset, seq, received = b"", 0, 1, 0
    while True:
        end, next_seq, cut = seg.feed_packets(buffer, offset, seq, 0.0)
        out += cut
        if end != offset:
            offset, seq = end, next_seq
            continue
        length = int.from_bytes(buffer[offset : offset + 3], "little")
        if len(buffer) - offset >= 4 and len(buffer) - offset >= 4 + length:
            out += seg.feed_many([buffer[offset + 5 : offset + 4 + length]], 0.0)
            offset, seq = offset + 4 + length, (seq + 1) & 0xFF
            continue
        if received >= len(wire):
            return out
        buffer = buffer[offset:] + wire[received : received + chunk]
        offset, received = 0, received + chunk


@settings(max_examples=150, deadline=None)
@given(
    transactions=txns,
    max_bytes=st.integers(min_value=64, max_value=20000),
    chunk=st.integers(min_value=1, max_value=30000),
    checksum=st.booleans(),
)
def test_packet_path_cuts_exactly_like_one_by_one(
    transactions: list[Txn], max_bytes: int, chunk: int, checksum: bool
) -> None:
    """With CRC32 and with binlog_checksum=NONE (the hot path then checks sizes only)."""
    fake = build(transactions, rotate=True, checksum=checksum)
    stream = fake.stream()
    alg = ev.CHECKSUM_CRC32 if checksum else ev.CHECKSUM_OFF
    single = Segmenter(fake.name, 4, 1.0, max_bytes)
    single.checksum_alg = alg
    one_by_one = [seg for raw in stream for seg in single.feed(raw, 0.0)]
    assert b"".join(s.data for s in one_by_one) == bytes(fake.data)
    packets = Segmenter(fake.name, 4, 1.0, max_bytes)
    packets.checksum_alg = alg
    assert run_packets(packets, framed(stream), chunk) == one_by_one


@pytest.mark.parametrize("damage", ["crc", "sequence", "ok-byte", "position"])
def test_packet_path_leaves_anything_wrong_to_the_checked_path(damage: str) -> None:
    fake = build([Txn([100, 100, 100]), Txn([50])])
    stream = fake.stream()
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    for raw in stream[:3]:  # artificial ROTATE, FDE, the first GTID: the hot path may start
        seg.feed(raw, 0.0)
    rows = framed(stream[3:], seq=4)
    good_end = sum(len(raw) + 5 for raw in stream[3:5])
    wire = bytearray(rows)
    if damage == "crc":
        wire[good_end + 5 + 30] ^= 0x01
    elif damage == "sequence":
        wire[good_end + 3] ^= 0x01
    elif damage == "ok-byte":
        wire[good_end + 4] = 0xFE
    else:  # log_pos one byte further on, with a valid CRC32
        event = bytearray(stream[5][: -ev.CHECKSUM_SIZE])
        event[13] += 1
        wire[good_end + 5 : good_end + 5 + len(stream[5])] = ev.with_checksum(bytes(event))
    end, seq, cut = seg.feed_packets(bytes(wire), 0, 4, 0.0)
    assert (end, seq, cut) == (good_end, 6, [])
    assert seg.position == fake.events[4][0]  # stands right before the refused event
    if damage in ("crc", "position"):
        with pytest.raises(ev.EventError):
            seg.feed_many([bytes(wire[end + 5 : end + 5 + len(stream[5])])], 0.0)


def test_heartbeats_and_ticks_cut_on_time_at_transaction_ends() -> None:
    fake = build([Txn([100]), Txn([100])])
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    assert run(seg, fake.stream(), [0.1]) == []
    assert seg.feed(heartbeat(fake.name, len(fake.data)), 0.5) == []
    cut = seg.feed(heartbeat(fake.name, len(fake.data)), 5.0)
    assert [(s.start, s.end, s.kind) for s in cut] == [(0, len(fake.data), KIND_TX)]
    assert cut[0].first_gtid == "0-1-1" and cut[0].last_gtid == "0-1-2"


def test_open_transaction_is_not_cut_by_time() -> None:
    fake = build([Txn([100, 100])])
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    stream = fake.stream()[:-1]  # the XID has not arrived
    before_gtid = fake.events[1][0]
    cut = run(seg, stream, [0.1]) + seg.tick(100.0)
    assert [(s.start, s.end) for s in cut] == [(0, before_gtid)]


def test_ddl_with_standalone_gtid_is_a_boundary_without_commit() -> None:
    fake = build([Txn([1], ddl=True)])
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    cut = run(seg, fake.stream(), [0.1]) + seg.tick(100.0)
    assert cut[-1].end == len(fake.data)


@pytest.mark.parametrize("damage", ["crc", "size", "position"])
def test_bad_events_are_refused(damage: str) -> None:
    fake = build([Txn([100])])
    stream = fake.stream()
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    for raw in stream[:3]:
        seg.feed(raw, 0.0)
    bad = bytearray(stream[3])
    if damage == "crc":
        bad[25] ^= 0xFF
    elif damage == "size":
        bad = bad[:-1]
    else:
        bad = bytearray(ev.with_checksum(bytes(bad[:13]) + b"\x00\x00\x00\x00" + bad[17:-4]))
    with pytest.raises(ev.EventError):
        seg.feed(bytes(bad), 0.0)


def test_resume_at_a_different_position_is_refused() -> None:
    fake = build([Txn([100]), Txn([100])])
    seg = Segmenter(fake.name, fake.events[3][0], 1.0, 1 << 20)
    with pytest.raises(ChainError):
        seg.feed(fake.stream(fake.events[2][0])[0], 0.0)


def test_server_moving_to_next_file_without_rotate_closes_the_old_one() -> None:
    """After a crash the old file has no ROTATE: the next file's artificial ROTATE ends it."""
    fake = build([Txn([100])])
    seg = Segmenter(fake.name, 4, 1.0, 1 << 20)
    cut = run(seg, fake.stream(), [0.1])
    nxt = FakeFile("mysql-bin.000008")
    cut += run(seg, nxt.stream(), [0.1])
    eof = [s for s in cut if s.kind == KIND_EOF]
    assert [(s.file, s.end) for s in eof] == [(fake.name, len(fake.data))]
    assert reassemble(cut, fake.name) == bytes(fake.data)
    assert seg.file == nxt.name
