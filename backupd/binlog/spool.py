"""The local spool: every segment is on disk (fsynced) before it is uploaded.

Bounded by `spool_max_bytes`: `write` blocks while the spool is full, so the reader stops
reading from the server (which keeps its binlogs) instead of dropping data. A segment larger
than the whole spool is let in when the spool is empty, so nothing can deadlock.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from backupd.binlog.extent import Extent, HasExtent
from backupd.binlog.segmenter import Segment
from backupd.durable import TMP_PREFIX, write_file
from backupd.private import private_dir

_NAME = re.compile(
    r"(?P<file>[^/]+?)__(?P<start>\d{12})-(?P<end>\d{12})_(?P<first_time>\d+)-(?P<last_time>\d+)"
    r"_(?P<first_gtid>[^~_]*)~(?P<last_gtid>[^~_]*)_(?P<kind>tx|mid|eof)\.seg"
)


@dataclass(frozen=True)
class SpoolEntry(HasExtent):
    """A spooled segment: its extent (from the file name) and where its bytes are."""

    path: Path
    extent: Extent
    spooled_at: float = 0.0  # monotonic time of the write (0 for entries from a previous run)

    def read(self) -> bytes:
        return self.path.read_bytes()


def entry_name(seg: Segment) -> str:
    return (
        f"{seg.file}__{seg.start:012d}-{seg.end:012d}_{seg.first_time}-{seg.last_time}_"
        f"{seg.first_gtid}~{seg.last_gtid}_{seg.kind}.seg"
    )


def parse_entry(path: Path) -> SpoolEntry | None:
    match = _NAME.fullmatch(path.name)
    if match is None:
        return None
    g = match.groupdict()
    extent = Extent(
        file=g["file"],
        start=int(g["start"]),
        end=int(g["end"]),
        first_time=int(g["first_time"]),
        last_time=int(g["last_time"]),
        first_gtid=g["first_gtid"],
        last_gtid=g["last_gtid"],
        kind=g["kind"],
    )
    return SpoolEntry(path, extent)


class Spool:
    def __init__(self, directory: Path, max_bytes: int, stop: threading.Event) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._stop = stop
        self._used = 0
        self._cond = threading.Condition()
        self.full = False  # true while a writer waits for space (an alarm)

    @property
    def used(self) -> int:
        return self._used

    def recover(self) -> list[SpoolEntry]:
        """What a previous run left (in stream order); half-written files are removed."""
        private_dir(self.directory)
        entries = []
        for path in self.directory.iterdir():
            entry = parse_entry(path)
            if entry is None:
                if path.name.startswith(TMP_PREFIX):
                    path.unlink(missing_ok=True)
                continue
            if path.stat().st_size != entry.size:
                path.unlink()  # cannot happen after fsync+rename; never upload a torn file
                continue
            entries.append(entry)
        with self._cond:
            self._used = sum(entry.size for entry in entries)
        return sorted(entries, key=lambda e: (e.file, e.start, e.end))

    def entries(self) -> list[SpoolEntry]:
        """Segments in the spool now (uploaded ones are gone)."""
        if not self.directory.is_dir():
            return []
        found = [parse_entry(path) for path in self.directory.iterdir()]
        return sorted((e for e in found if e is not None), key=lambda e: (e.file, e.start, e.end))

    def write(self, seg: Segment) -> SpoolEntry | None:
        """Store `seg` durably; blocks while full; None when stopping before it fit."""
        size = len(seg.data)
        with self._cond:
            while self._used and self._used + size > self.max_bytes:
                self.full = True
                self._cond.wait(0.5)
                if self._stop.is_set():
                    return None
            self.full = False
            self._used += size
        path = self.directory / entry_name(seg)
        try:
            write_file(path, seg.data)
        except OSError:
            self.release(size)
            raise
        entry = parse_entry(path)
        assert entry is not None
        return replace(entry, spooled_at=time.monotonic())

    def remove(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)
        self.release(entry.size)

    def release(self, size: int) -> None:
        with self._cond:
            self._used = max(0, self._used - size)
            self._cond.notify_all()
