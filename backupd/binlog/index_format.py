"""The stored change index object, version 2: a summary `find` can read without the rest.

A week of archive holds millions of transactions; decoding them all takes `find` tens of
seconds. So an object is three zstd frames, each one JSON document:

1. header: {"version": 2, "file", "start", "end", "summary": {"count", "first_time",
   "last_time" (commit times), "tables": {"db.t": [most rows inserted, updated, deleted by
   one transaction]}, "kinds": [...], "statements": how many have one}}
2. statements: [statement or null, ...], one per transaction, in order
3. transactions: [[gtid, pos, end_pos, commit_time, kind, {"db.t": [ins, upd, del]}], ...]

`find` decompresses the header frame alone to skip an object that cannot hold a match, the
statements frame alone for `--statement`, and the rest only for objects that can match.
Version 1 (one frame: the whole document, transactions with their statement) stays
readable: archives written before keep working. Deterministic: the same transactions give
the same bytes (and so the same key).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard

from backupd.binlog.change_index import IndexObject, Transaction

VERSION = 2
READABLE = (1, 2)
_MAX_FRAME = 1 << 30


@dataclass(frozen=True)
class Summary:
    """What every transaction of an object has at most: enough to skip the object."""

    count: int
    first_time: int
    last_time: int
    tables: dict[str, list[int]]  # name -> most rows [ins, upd, del] of one transaction
    kinds: list[str]
    statements: int

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "tables": self.tables,
            "kinds": self.kinds,
            "statements": self.statements,
        }

    @classmethod
    def of(cls, txns: list[Transaction]) -> Summary:
        tables: dict[str, list[int]] = {}
        for txn in txns:
            for name, counts in txn.tables.items():
                most = tables.setdefault(name, [0, 0, 0])
                for i in range(3):
                    most[i] = max(most[i], counts[i])
        times = [txn.commit_time for txn in txns]
        return cls(
            count=len(txns),
            first_time=min(times, default=0),
            last_time=max(times, default=0),
            tables=dict(sorted(tables.items())),
            kinds=sorted({txn.kind for txn in txns}),
            statements=sum(txn.statement is not None for txn in txns),
        )

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Summary:
        return cls(
            int(doc["count"]),
            int(doc["first_time"]),
            int(doc["last_time"]),
            {str(k): [int(n) for n in v] for k, v in doc["tables"].items()},
            [str(k) for k in doc["kinds"]],
            int(doc["statements"]),
        )


def _frame(document: Any) -> bytes:
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text)


def encode(obj: IndexObject) -> bytes:
    """Version 2: header with summary, statements, transactions (three zstd frames)."""
    header = {
        "version": VERSION,
        "file": obj.file,
        "start": obj.start,
        "end": obj.end,
        "summary": Summary.of(obj.transactions).to_json(),
    }
    statements = [txn.statement for txn in obj.transactions]
    rows = [txn.to_list()[:6] for txn in obj.transactions]
    return _frame(header) + _frame(statements) + _frame(rows)


class Loaded:
    """An index object read frame by frame, each decoded once, when first asked for."""

    def __init__(self, body: bytes) -> None:
        self._rest = body
        self._texts: list[bytes] = []  # frames decompressed so far
        self._frames: dict[int, Any] = {}  # and those parsed
        header = self._doc(0)
        if not isinstance(header, dict) or header.get("version") not in READABLE:
            found = header.get("version") if isinstance(header, dict) else None
            raise ValueError(f"index object version {found!r} is not one of {READABLE}")
        self.version = int(header["version"])
        self.file = str(header["file"])
        self.start, self.end = int(header["start"]), int(header["end"])
        self._v1 = header.get("transactions") if self.version == 1 else None
        self.summary = Summary.from_json(header["summary"]) if self.version == 2 else None
        self._txns: list[Transaction] | None = None

    def _text(self, number: int) -> bytes:
        """Frame `number`'s JSON text (the frames before it decompressed on the way)."""
        while len(self._texts) <= number:
            try:
                reader = zstandard.ZstdDecompressor().decompressobj()
                text = reader.decompress(self._rest)
            except zstandard.ZstdError as exc:
                raise ValueError(f"index object does not decompress: {exc}") from exc
            if len(text) > _MAX_FRAME:
                raise ValueError("index object frame is too large")
            self._rest = reader.unused_data
            self._texts.append(text)
        return self._texts[number]

    def _doc(self, number: int) -> Any:
        """Frame `number`'s document, parsed once."""
        if number not in self._frames:
            self._frames[number] = json.loads(self._text(number))
        return self._frames[number]

    def statements_text(self) -> str | None:
        """The statements frame as its JSON text, unparsed (None for version 1): a plain word
        without quote, backslash or control character appears in it exactly where it
        appears in a statement (JSON escapes only those; non-ASCII is written as is)."""
        return None if self._v1 is not None else self._text(1).decode()

    def statements(self) -> list[str | None]:
        """One per transaction, in order (None: it has none)."""
        if self._v1 is not None:
            return [item[6] for item in self._v1]
        return list(self._doc(1))

    def transactions(self) -> list[Transaction]:
        if self._txns is not None:
            return self._txns
        if self._v1 is not None:
            self._txns = [Transaction.from_list(self.file, item) for item in self._v1]
            return self._txns
        said = self.statements()
        rows = self._doc(2)
        if len(rows) != len(said):
            raise ValueError("index object frames disagree on the transaction count")
        self._txns = [
            Transaction.from_list(self.file, [*row, text])
            for row, text in zip(rows, said, strict=True)
        ]
        return self._txns

    def select(
        self, wanted: Callable[[int, dict[str, list[int]], str, str | None], bool]
    ) -> list[Transaction]:
        """The transactions for which `wanted(commit_time, tables, kind, statement)` holds,
        built only for those (a compacted file's object lists a million or more)."""
        if self._txns is not None or self._v1 is not None:
            return [
                t
                for t in self.transactions()
                if wanted(t.commit_time, t.tables, t.kind, t.statement)
            ]
        said = self.statements()
        rows = self._doc(2)
        if len(rows) != len(said):
            raise ValueError("index object frames disagree on the transaction count")
        return [
            Transaction.from_list(self.file, [*row, text])
            for row, text in zip(rows, said, strict=True)
            if wanted(row[3], row[5], row[4], text)
        ]

    def whole(self) -> IndexObject:
        return IndexObject(self.file, self.start, self.end, self.transactions())


def load(body: bytes, object_sha256: str) -> Loaded:
    """The object's header (the rest on demand), its sha256 (from its key) checked first;
    ValueError when damaged."""
    if hashlib.sha256(body).hexdigest() != object_sha256:
        raise ValueError("index object sha256 mismatch")
    try:
        return Loaded(body)
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"index object is malformed: {exc}") from exc


def text_of(body: bytes) -> bytes:
    """Every frame's JSON text, one after the other (to inspect what an object stores:
    `ZstdDecompressor().decompress` returns the first frame only)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    with reader:
        return reader.read()


def decode(body: bytes, object_sha256: str) -> IndexObject:
    """The whole object (either version); ValueError when damaged."""
    loaded = load(body, object_sha256)
    try:
        return loaded.whole()
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"index object is malformed: {exc}") from exc
