"""One archived byte range as every stage knows it: file, [start, end), times, GTIDs, kind.

The segmenter cuts an `Extent`, the spool names its file after it, the object key spells it
out and the restore planner walks it; each of those types embeds the one value (and reads
its fields through `HasExtent`) instead of keeping its own copy of the same eight fields.
"""

from __future__ import annotations

from dataclasses import dataclass

TX = "tx"  # ends at a transaction boundary
MID = "mid"  # ends inside a transaction
EOF = "eof"  # ends the file


@dataclass(frozen=True, order=True)
class Extent:
    file: str
    start: int
    end: int
    first_time: int  # event timestamps (Unix seconds) of the first and last event
    last_time: int
    first_gtid: str  # first and last GTID beginning inside ("" when none or unknown)
    last_gtid: str
    kind: str  # TX, MID or EOF

    @property
    def size(self) -> int:
        return self.end - self.start


class HasExtent:
    """The embedded extent's fields, read through (for the types that carry one)."""

    extent: Extent

    @property
    def file(self) -> str:
        return self.extent.file

    @property
    def start(self) -> int:
        return self.extent.start

    @property
    def end(self) -> int:
        return self.extent.end

    @property
    def first_time(self) -> int:
        return self.extent.first_time

    @property
    def last_time(self) -> int:
        return self.extent.last_time

    @property
    def first_gtid(self) -> str:
        return self.extent.first_gtid

    @property
    def last_gtid(self) -> str:
        return self.extent.last_gtid

    @property
    def kind(self) -> str:
        return self.extent.kind

    @property
    def size(self) -> int:
        return self.extent.size
