"""Roll-up: runs of a file's segments folded into one object each, with their indexes merged
exactly; the planner's rules as properties, the fold on a real file repository."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from backupd.binlog import index_store, layout, rollup
from backupd.binlog.change_index import IndexObject, Transaction
from backupd.binlog.compactor import Compactor
from backupd.binlog.extent import Extent
from backupd.binlog.fetch import fetch
from backupd.binlog.index_batcher import Pending, runs
from backupd.binlog.recent import RecentSegments
from backupd.binlog.spool import SpoolEntry
from backupd.binlog.uploader import Target
from backupd.storage.filestore import FileStore
from tests.binlog_fakes import FakeFile, Txn
from tests.unit.test_binlog_compact_fetch import archive

FILE = "mysql-bin.000001"


def seg_key(start: int, end: int, kind: str = "tx") -> layout.SegmentKey:
    extent = Extent(FILE, start, end, start, end, "", "", kind)
    return layout.SegmentKey("s", extent, "a" * 64, f"{start:064d}", "zst")


def index_key(start: int, end: int) -> layout.IndexKey:
    return layout.IndexKey("s", FILE, start, end, f"{start:032d}{end:032d}")


@st.composite
def files(draw: st.DrawFn) -> tuple[list[layout.SegmentKey], list[layout.IndexKey]]:
    """A chain of segments and index objects over runs of them (some not stored yet)."""
    sizes = draw(st.lists(st.integers(1, 120), min_size=1, max_size=40))
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    chain = [seg_key(a, b) for a, b in itertools.pairwise(bounds)]
    indexes, i = [], 0
    while i < len(chain):
        width = draw(st.integers(1, 4))
        j = min(i + width, len(chain))
        if draw(st.booleans()) or draw(st.booleans()):  # three in four are stored
            indexes.append(index_key(chain[i].start, chain[j - 1].end))
        i = j
    return chain, indexes


@settings(max_examples=300, deadline=None)
@given(files(), st.integers(20, 400), st.booleans(), st.booleans())
def test_runs_are_bounded_consecutive_and_exactly_indexed(
    found: tuple[list[layout.SegmentKey], list[layout.IndexKey]],
    run_bytes: int,
    closed: bool,
    indexed: bool,
) -> None:
    chain, indexes = found
    runs = rollup.plan(chain, indexes, run_bytes, closed, indexed)
    position = {seg: n for n, seg in enumerate(chain)}
    used: set[layout.SegmentKey] = set()
    for n, run in enumerate(runs):
        at = [position[seg] for seg in run.parts]
        assert at == list(range(at[0], at[0] + len(at))) and len(at) > 1
        assert not used & set(run.parts)
        used |= set(run.parts)
        assert run.size <= 2 * run_bytes  # memory stays bounded
        # an open file's runs are full, but for one cut short by a large piece after it
        following = runs[n + 1].start if n + 1 < len(runs) else -1
        assert closed or run.size >= run_bytes or following == run.end
        if indexed:  # the indexes tile the run: merged, they are its index exactly
            edges = [(i.start, i.end) for i in run.indexes]
            assert edges[0][0] == run.start and edges[-1][1] == run.end
            assert all(a[1] == b[0] for a, b in itertools.pairwise(edges))
            assert all(i in indexes for i in run.indexes)
        else:
            assert run.indexes == ()
    if indexed:
        return
    # Without the index nothing foldable is left: small segments outside runs come alone in
    # a closed file, and in stretches too short for a run in an open one.
    stretch: list[layout.SegmentKey] = []
    for seg in [*chain, None]:
        if seg is not None and seg not in used and seg.size * 2 < run_bytes:
            stretch.append(seg)
            continue
        assert len(stretch) <= 1 if closed else sum(s.size for s in stretch) < run_bytes
        stretch = []


def test_plan_waits_for_indexes_and_leaves_big_segments() -> None:
    chain = [seg_key(n * 10, n * 10 + 10) for n in range(10)] + [seg_key(100, 300)]
    indexes = [index_key(0, 30), index_key(30, 60)]  # 60.. not indexed yet
    runs = rollup.plan(chain, indexes, 50, closed=False, indexed=True)
    assert [(r.start, r.end, len(r.indexes)) for r in runs] == [(0, 60, 2)]
    assert rollup.plan(chain, indexes, 100, closed=False, indexed=True) == []  # not full yet
    closed = rollup.plan(chain, indexes, 100, closed=True, indexed=True)
    assert [(r.start, r.end) for r in closed] == [(0, 60)]  # a closed file: short runs too
    plain = rollup.plan(chain, [], 40, closed=False, indexed=False)
    assert [(r.start, r.end) for r in plain] == [(0, 40), (40, 80)]  # [200-byte] left alone


def test_an_empty_index_never_stands_for_a_segment() -> None:
    """An index of no bytes (an empty end marker's) at a segment's start covers nothing: the
    segment waits for its own, or its transactions would be missing from the fold's index."""
    chain = [seg_key(0, 10), seg_key(10, 20), seg_key(20, 30)]
    indexes = [index_key(0, 10), index_key(10, 10), index_key(20, 30)]
    runs = rollup.plan(chain, indexes, 30, closed=False, indexed=True)
    assert [(r.start, r.end) for r in runs] == []  # [10, 20) has no index: no run across it
    indexes.append(index_key(10, 20))
    runs = rollup.plan(chain, indexes, 30, closed=False, indexed=True)
    assert [(r.start, r.end) for r in runs] == [(0, 30)]
    assert [(i.start, i.end) for i in runs[0].indexes] == [(0, 10), (10, 20), (20, 30)]


def test_shadowed_are_the_leftovers_of_an_interrupted_fold() -> None:
    whole = seg_key(0, 30)
    parts = [seg_key(0, 10), seg_key(10, 20), seg_key(20, 30), seg_key(30, 40)]
    chain = layout.chain([whole, *parts])
    assert chain is not None and chain.segments == (whole, parts[3])
    merged, inner = index_key(0, 30), index_key(10, 20)
    segs, idx = rollup.shadowed(chain.segments, [whole, *parts], [merged, inner])
    assert segs == parts[:3] and idx == [inner]
    assert rollup.shadowed(chain.segments, [whole, *parts], [inner]) == (parts[:3], [])


def indexed_archive(tmp_path: Path, transactions: int, batch: int) -> tuple[FileStore, FakeFile]:
    """An open file archived in small segments, an index object stored every `batch`."""
    store = FileStore(tmp_path / "repo")
    fake = FakeFile(FILE)
    for n in range(transactions):
        fake.transaction(Txn([100 + n % 7, 1000 + n]))
    archive(tmp_path, store, fake, max_bytes=200)
    segments = chain_of(store).segments
    for i in range(0, len(segments), batch):
        run = segments[i : i + batch]
        txns = [  # one per segment, as if it committed there (the fold never reads them)
            Transaction(f"0-1-{seg.start}", FILE, seg.start, seg.end, seg.last_time, {}, "dml", "")
            for seg in run
        ]
        obj = IndexObject(FILE, run[0].start, run[-1].end, txns)
        index_store.store_index(store, "1", obj)
    return store, fake


def keys(store: FileStore) -> list[str]:
    return sorted(info.key for info in store.list(layout.file_prefix("1", FILE)))


def chain_of(store: FileStore) -> layout.FileChain:
    found = layout.chain(k for key in keys(store) if (k := layout.parse_segment(key)))
    assert found is not None
    return found


def transactions(store: FileStore) -> list[Transaction]:
    """Every transaction the chain's covering indexes list, in file order."""
    indexes = index_store.indexes_of(keys(store))
    found = index_store.covering_each(chain_of(store).segments, indexes)
    assert all(found.values())
    chosen = {key for key in found.values() if key is not None}
    return index_store.merged(index_store.load_index(store, key) for key in chosen)


def test_roll_up_folds_runs_keeps_every_byte_and_transaction(tmp_path: Path) -> None:
    store, fake = indexed_archive(tmp_path, 120, batch=4)
    before_chain, before_txns = chain_of(store), transactions(store)
    assert len(before_chain.segments) > 30 and not before_chain.closed
    target = Target(lambda: store, "1", "zstd", 3)
    rolled = rollup.roll_up(target, "1", FILE, run_bytes=3000)
    after = chain_of(store)
    assert rolled and set(rolled) <= set(after.segments)
    assert after.end == before_chain.end and not after.holes
    assert len(after.segments) < len(before_chain.segments) / 3
    assert all(3000 <= seg.size <= 6000 for seg in rolled)
    assert transactions(store) == before_txns  # the merged indexes list exactly the same
    indexes = index_store.indexes_of(keys(store))
    for seg in rolled:  # each fold has an index of exactly its range
        assert any((i.start, i.end) == (seg.start, seg.end) for i in indexes)
    fetch(store, tmp_path / "out", "1")
    assert (tmp_path / "out" / FILE).read_bytes() == bytes(fake.data[: after.end])
    stored = [part for k in keys(store) if (part := layout.parse_segment(k)) is not None]
    assert len(stored) == len(before_chain.segments) + len(rolled)  # parts kept for now
    assert rollup.roll_up(target, "1", FILE, run_bytes=3000) == []  # nothing more is ready
    stored = [part for k in keys(store) if (part := layout.parse_segment(k)) is not None]
    assert sorted(stored) == sorted(after.segments)  # the next roll-up deleted the parts
    indexes = index_store.indexes_of(keys(store))
    used = set(index_store.covering_each(after.segments, indexes).values())
    assert set(indexes) == used  # and the parts' indexes
    assert transactions(store) == before_txns


def test_an_interrupted_fold_is_finished_by_the_next(tmp_path: Path) -> None:
    """Whatever a crash leaves (parts deleted or not, the merged index stored or not), the
    chain reads the fold and the next roll-up deletes the rest."""
    store, _fake = indexed_archive(tmp_path, 60, batch=3)
    saved = {key: store.get(key) for key in keys(store)}
    target = Target(lambda: store, "1", "zstd", 3)
    assert rollup.roll_up(target, "1", FILE, run_bytes=2000)
    assert rollup.roll_up(target, "1", FILE, run_bytes=2000) == []
    done = keys(store)
    for key, body in saved.items():  # as if none of the deletes had happened
        store.put(key, body)
    assert chain_of(store).segments == tuple(
        s for k in done if (s := layout.parse_segment(k)) is not None
    )
    assert rollup.roll_up(target, "1", FILE, run_bytes=2000) == []
    assert keys(store) == done


def test_compactor_rolls_a_file_up_as_it_grows_and_tidies_after(tmp_path: Path) -> None:
    store, _fake = indexed_archive(tmp_path, 80, batch=2)
    stop = threading.Event()
    target = Target(lambda: store, "1", "zstd", 3)
    compactor = Compactor(target, stop, RecentSegments(), True, 2500, tidy_seconds=0.2)
    compactor.start([])
    try:
        parts = chain_of(store).segments
        few = next(n for n in range(len(parts)) if sum(p.size for p in parts[: n + 1]) >= 2500)
        for seg in parts[:few]:
            compactor.stored("1", FILE, seg.size)  # under 2500 bytes: no job yet
        assert compactor.settle(5) and len(chain_of(store).segments) == len(parts)
        for seg in parts[few:]:
            compactor.stored("1", FILE, seg.size)
        assert compactor.settle(30)  # the folds, then the tidy job 0.2 s later
        assert len(chain_of(store).segments) < len(parts) / 3

        def left() -> tuple[list[layout.SegmentKey], list[layout.IndexKey]]:
            listed = keys(store)
            segments = [seg for k in listed if (seg := layout.parse_segment(k)) is not None]
            found = layout.chain(segments)
            assert found is not None
            return rollup.shadowed(found.segments, segments, index_store.indexes_of(listed))

        assert left() == ([], [])  # a later job deleted what the folds replaced
    finally:
        stop.set()
        compactor.join(5)


def test_index_batches_stay_smaller_than_half_a_run() -> None:
    """Roll-up folds whole index objects, so the batcher cuts a fast writer's minute into
    objects of at most half `rollup_bytes` (a segment larger than that stays one)."""
    sizes = [10, 10, 10, 30, 10, 10, 10, 10]
    pending, at = [], 0
    for size in sizes:
        extent = Extent(FILE, at, at + size, 1, 1, "", "", "tx")
        pending.append(Pending(Path(f"{at}.idx"), "s", SpoolEntry(Path(f"{at}"), extent)))
        at += size
    spans = [(run[0].entry.start, run[-1].entry.end) for run in runs(pending, max_bytes=25)]
    assert spans == [(0, 20), (20, 30), (30, 60), (60, 80), (80, 100)]
    assert [(r[0].entry.start, r[-1].entry.end) for r in runs(pending)] == [(0, 100)]


def test_a_closed_file_too_large_to_compact_whole_is_rolled_up_to_its_end(
    tmp_path: Path,
) -> None:
    """Compaction holds a file in memory, so it takes files only up to a bound whole; a
    larger closed file is folded to its end, its last run shorter. Each job (the fold, then
    the tidy job) lists the file once, for compaction and roll-up alike."""
    requests: list[str] = []
    store = FileStore(tmp_path / "repo", on_request=requests.append)
    fake = FakeFile(FILE)
    for n in range(100):
        fake.transaction(Txn([100 + n % 7, 1000 + n]))
    fake.rotate("mysql-bin.000002")
    archive(tmp_path, store, fake, max_bytes=200)
    parts = chain_of(store).segments
    assert chain_of(store).closed and len(parts) > 40
    stop = threading.Event()
    target = Target(lambda: store, "1", "zstd", 3)
    compactor = Compactor(target, stop, None, False, 3000, tidy_seconds=0.2, whole_bytes=6000)
    assert compactor.whole_bytes < len(fake.data)
    requests.clear()
    compactor.start([("1", FILE)])
    try:
        assert compactor.settle(30)
    finally:
        stop.set()
        compactor.join(5)
    assert requests.count("ListObjectsV2") == 2  # the fold's job and the tidy job
    folded = chain_of(store)
    assert folded.closed and folded.end == len(fake.data) and len(folded.segments) > 1
    assert folded.segments[-1].kind == "eof" and folded.segments[-1].size > 1
    assert all(seg.size <= 6000 for seg in folded.segments)
    assert layout.manifest_key("1", FILE) not in keys(store)  # not compacted whole
    fetch(store, tmp_path / "out", "1")
    assert (tmp_path / "out" / FILE).read_bytes() == bytes(fake.data)
