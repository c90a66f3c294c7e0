"""`find`'s fast path (summaries, statements frame, newest-first early stop, one sweep for
coverage) answers exactly what decoding every object answers, for archives mixing index
objects of version 1 (written before summaries) and 2, and for many queries."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupd.binlog import index_format, index_store, layout, statements
from backupd.binlog.archive import Archive
from backupd.binlog.change_index import IndexObject, Transaction
from backupd.binlog.extent import Extent
from backupd.binlog.index_format import decode, encode
from backupd.find import Found, Query, find
from backupd.storage.filestore import FileStore

T0 = 1_700_000_000
FILE = "mysql-bin.000001"
TABLES = ("shop.orders", "shop.carts", "shop.items", "crm.notes")
TEXTS: tuple[str | None, ...] = (
    None,
    "DROP TABLE shop.tmp",
    "ALTER TABLE shop.orders ADD x INT",
    "UPDATE shop.carts\nSET q=1",
)
TEXTS += ("INSERT INTO shop.orders VALUES (1)", 'DELETE FROM crm.notes WHERE t = "a\\"b"')
KINDS = (statements.KIND_DML, statements.KIND_DDL, statements.KIND_OTHER)


def encode_v1(obj: IndexObject) -> bytes:
    """The version 1 object as backupd wrote it before version 2."""
    document = {
        "version": 1,
        "file": obj.file,
        "start": obj.start,
        "end": obj.end,
        "transactions": [txn.to_list() for txn in obj.transactions],
    }
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text)


counts = st.sampled_from([0, 0, 1, 2, 3, 150])
transaction = st.tuples(
    st.integers(0, 6),  # commit time offset (ties on purpose)
    st.dictionaries(st.sampled_from(TABLES), st.lists(counts, min_size=3, max_size=3), max_size=3),
    st.sampled_from(KINDS),
    st.sampled_from(TEXTS),
)
archive_shape = st.lists(
    st.tuples(st.lists(transaction, max_size=6), st.booleans(), st.integers(1, 2)),
    min_size=1,
    max_size=8,
)


def write_archive(root: Path, objects: list[tuple[list[tuple], bool, int]]) -> FileStore:  # type: ignore[type-arg]
    """One index object per entry (version 2 or 1) over `parts` segments of one file."""
    store = FileStore(root)
    archive = Archive(store, "c")
    history = archive.new_history(archive.read(), "start", "1")
    archive.begin(history)
    pos, gtid = 0, 0
    for txns, version2, parts in objects:
        start = pos
        made = []
        for offset, tables, kind, text in txns:
            gtid += 1
            made.append(
                Transaction(f"0-1-{gtid}", FILE, pos, pos + 10, T0 + offset, tables, kind, text)
            )
            pos += 10
        pos += 10  # every segment holds at least its own bytes
        times = [t.commit_time for t in made] or [T0]
        cuts = [start, *(start + (pos - start) * i // parts for i in range(1, parts)), pos]
        for a, b in itertools.pairwise(cuts):
            extent = Extent(FILE, a, b, min(times), max(times), "", "", "tx")
            sha = hashlib.sha256(f"{a}".encode()).hexdigest()
            store.put(layout.SegmentKey(history.stream, extent, sha, sha, "zst").key, b"")
        obj = IndexObject(FILE, start, pos, made)
        body = encode(obj) if version2 else encode_v1(obj)
        store.put(index_store.key_for(history.stream, obj, body).key, body)
    return store


def plain(store: FileStore, query: Query) -> list[Found]:
    """The answer by decoding every object whose segments the query covers (no shortcut)."""
    view = Archive(store, "c").read()
    found: dict[tuple[str, int], Found] = {}
    for timeline in view.timelines.values():
        for chain in timeline.files().values():
            for seg in chain.segments:
                index = index_store.covering(seg, timeline.indexes)
                if seg.size == 0 or not query.covers(seg) or index is None:
                    continue
                for txn in index_store.load_index(store, index).transactions:
                    if query.matches(txn):
                        found.setdefault((txn.file, txn.pos), Found(timeline.id, txn))
    return sorted(found.values(), key=Found.order, reverse=True)[: query.limit]


def at(offset: int | None) -> datetime | None:
    return None if offset is None else datetime.fromtimestamp(T0 + offset, UTC)


query_shape = st.builds(
    Query,
    tables=st.lists(st.sampled_from(["shop.orders", "shop.*", "crm.?otes", "x.y"]), max_size=2).map(
        tuple
    ),
    ops=st.lists(st.sampled_from(["insert", "update", "delete", "ddl"]), max_size=2).map(tuple),
    since=st.one_of(st.none(), st.integers(0, 6)).map(at),
    until=st.one_of(st.none(), st.integers(0, 6)).map(at),
    min_rows=st.sampled_from([0, 1, 2, 3, 4, 150]),
    statement=st.sampled_from([None, "drop|alter", "^update", "SET q", "^$", ".*", 'a"b']).map(
        lambda p: None if p is None else re.compile(p, re.IGNORECASE)
    ),
    limit=st.sampled_from([1, 2, 3, 50]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archive_shape, st.lists(query_shape, min_size=1, max_size=6))
def test_the_fast_path_answers_what_decoding_everything_answers(
    objects: list[tuple[list[tuple], bool, int]],  # type: ignore[type-arg]
    queries: list[Query],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = write_archive(Path(directory), objects)
        for query in queries:
            fast = find(store, "c", query)
            assert not fast.warnings
            expected = plain(store, query)
            assert [(f.timeline, f.txn) for f in fast.found] == [
                (f.timeline, f.txn) for f in expected
            ]


def test_version_2_round_trips_and_version_1_stays_readable() -> None:
    txns = [
        Transaction("0-1-1", FILE, 4, 90, T0, {"shop.orders": [1, 0, 0]}, "dml", "INSERT ..."),
        Transaction("0-1-2", FILE, 90, 200, T0 + 5, {"shop.orders": [0, 0, 400]}, "dml", None),
        Transaction(None, FILE, 200, 300, T0 + 3, {}, "ddl", "DROP TABLE t"),
    ]
    obj = IndexObject(FILE, 0, 300, txns)
    for body in (encode(obj), encode_v1(obj)):
        assert decode(body, hashlib.sha256(body).hexdigest()) == obj
    body = encode(obj)
    loaded = index_format.load(body, hashlib.sha256(body).hexdigest())
    assert loaded.summary == index_format.Summary(
        3, T0, T0 + 5, {"shop.orders": [1, 0, 400]}, ["ddl", "dml"], 2
    )
    assert loaded.statements() == ["INSERT ...", None, "DROP TABLE t"]
    assert encode(obj) == body  # deterministic: same object, same key


def test_a_damaged_or_unknown_object_is_refused() -> None:
    body = encode(IndexObject(FILE, 0, 10, []))
    try:
        decode(body, "0" * 64)
    except ValueError as exc:
        assert "sha256" in str(exc)
    else:
        raise AssertionError("a checksum mismatch was accepted")
    future = zstandard.ZstdCompressor().compress(b'{"version": 3}')
    try:
        decode(future, hashlib.sha256(future).hexdigest())
    except ValueError as exc:
        assert "version 3" in str(exc)
    else:
        raise AssertionError("an unknown version was accepted")


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.text(alphabet='iksIKSnul _-."', min_size=1, max_size=3), min_size=1, max_size=3),
    st.lists(
        st.one_of(
            st.none(),
            st.text(alphabet='iksIKSnul_\n"\\\u0131\u0130\u017f\u212a\u00e9', max_size=12),
        ),
        max_size=6,
    ),
    st.booleans(),
)
def test_statement_words_are_found_as_the_regex_finds_them(
    words: list[str], texts: list[str | None], ignore_case: bool
) -> None:
    """`--statement DROP|ALTER` searches a whole statements frame's JSON text with `in`
    (lowered, with the letters IGNORECASE takes for ASCII ones folded): it may say yes where
    no statement matches (a word in an escape, in `null`), never no where one does."""
    try:
        pattern = re.compile("|".join(words), re.IGNORECASE if ignore_case else 0)
    except re.error:
        return
    txns = [
        Transaction(f"0-1-{n}", "f.000001", n * 10, n * 10 + 9, 1, {}, "dml", text)
        for n, text in enumerate(texts)
    ]
    body = encode(IndexObject("f.000001", 0, 100, txns))
    loaded = index_format.load(body, hashlib.sha256(body).hexdigest())
    expected = pattern.search("") is not None or any(
        text and pattern.search(text) for text in texts
    )
    said = Query(statement=pattern).said(loaded)
    assert said or not expected
    if all(text is not None and not set('"\\\n') & set(text) for text in texts):
        assert said == expected  # nothing escaped, no null: the JSON text says exactly
    if expected or said:  # then the object's statements are searched one by one
        found = loaded.select(Query(statement=pattern).matches_fields)
        assert bool(found) == expected
