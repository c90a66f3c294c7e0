"""Object keys of the binlog archive: a restore planner finds everything by LIST alone.

Public and stable: restore, verify and fetch import these parsers.

    binlog/<server>/<file>/<start>-<end>_<first_time>-<last_time>_<first_gtid>~<last_gtid>_<kind>_<raw_sha256>_<object_sha256>.<ext>
    binlog/<server>/<file>/manifest.json
    binlog/<server>/gaps/<from_file>_<from_pos>_<to_file>_<to_pos>.json

- `server`: the protected server's identity (`server_id` on MariaDB, `server_uuid` on MySQL).
- `file`: the binlog file name (`mysql-bin.000042`); `start`/`end`: the byte range [start, end)
  of that file, 12 digits each; the first segment of a file starts at 0 (the magic).
- `first_time`/`last_time`: event timestamps (Unix seconds) of the first and last event.
- `first_gtid~last_gtid`: the first and last GTID that begins in the segment (empty when none;
  both left out when the name would exceed 255 bytes).
- `kind`: `tx` ends at a transaction boundary, `mid` inside a transaction, `eof` ends the file.
- `raw_sha256`: of the binlog bytes; `object_sha256`: of the stored object; `ext`: `zst` or
  `bin` (uncompressed).

A compacted file is one segment [0, size) of kind `eof`; its manifest lists the segments it
replaced. Where segments overlap (compaction not finished), the longest one wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ROOT = "binlog"
MAX_NAME = 255
_HEX64 = "[0-9a-f]{64}"
_SEGMENT = re.compile(
    r"(?P<start>\d{12})-(?P<end>\d{12})_(?P<first_time>\d+)-(?P<last_time>\d+)_"
    r"(?P<first_gtid>[0-9a-zA-Z:.\-]*)~(?P<last_gtid>[0-9a-zA-Z:.\-]*)_"
    rf"(?P<kind>tx|mid|eof)_(?P<raw_sha256>{_HEX64})_(?P<object_sha256>{_HEX64})"
    r"\.(?P<ext>zst|bin)"
)
_GAP = re.compile(
    r"(?P<from_file>[^/_]+)_(?P<from_pos>\d+)_(?P<to_file>[^/_]+)_(?P<to_pos>\d+)\.json"
)


@dataclass(frozen=True, order=True)
class SegmentKey:
    """Everything a segment's key says about it."""

    server: str
    file: str
    start: int
    end: int
    first_time: int
    last_time: int
    first_gtid: str
    last_gtid: str
    kind: str
    raw_sha256: str
    object_sha256: str
    ext: str

    @property
    def key(self) -> str:
        return segment_key(self)

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, order=True)
class GapKey:
    """A range the archive can never hold: the server purged it before it was archived."""

    server: str
    from_file: str
    from_pos: int
    to_file: str
    to_pos: int

    @property
    def key(self) -> str:
        name = f"{self.from_file}_{self.from_pos:012d}_{self.to_file}_{self.to_pos:012d}.json"
        return f"{server_prefix(self.server)}gaps/{name}"


def server_prefix(server: str) -> str:
    return f"{ROOT}/{server}/"


def file_prefix(server: str, file: str) -> str:
    return f"{server_prefix(server)}{file}/"


def manifest_key(server: str, file: str) -> str:
    return f"{file_prefix(server, file)}manifest.json"


def segment_key(seg: SegmentKey) -> str:
    gtids = f"{seg.first_gtid}~{seg.last_gtid}"
    name = _segment_name(seg, gtids)
    if len(name.encode()) > MAX_NAME:
        name = _segment_name(seg, "~")
    return file_prefix(seg.server, seg.file) + name


def _segment_name(seg: SegmentKey, gtids: str) -> str:
    return (
        f"{seg.start:012d}-{seg.end:012d}_{seg.first_time}-{seg.last_time}_{gtids}_"
        f"{seg.kind}_{seg.raw_sha256}_{seg.object_sha256}.{seg.ext}"
    )


def parse_segment(key: str) -> SegmentKey | None:
    """The segment a key names, or None for any other object (manifests, gaps, strangers)."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != ROOT:
        return None
    match = _SEGMENT.fullmatch(parts[3])
    if match is None:
        return None
    g = match.groupdict()
    return SegmentKey(
        server=parts[1],
        file=parts[2],
        start=int(g["start"]),
        end=int(g["end"]),
        first_time=int(g["first_time"]),
        last_time=int(g["last_time"]),
        first_gtid=g["first_gtid"],
        last_gtid=g["last_gtid"],
        kind=g["kind"],
        raw_sha256=g["raw_sha256"],
        object_sha256=g["object_sha256"],
        ext=g["ext"],
    )


def parse_gap(key: str) -> GapKey | None:
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[2] != "gaps":
        return None
    match = _GAP.fullmatch(parts[3])
    if match is None:
        return None
    return GapKey(
        server=parts[1],
        from_file=match["from_file"],
        from_pos=int(match["from_pos"]),
        to_file=match["to_file"],
        to_pos=int(match["to_pos"]),
    )


@dataclass(frozen=True)
class FileChain:
    """The segments that rebuild one file from offset 0, and what is wrong with it."""

    file: str
    segments: tuple[SegmentKey, ...]
    end: int  # bytes [0, end) are archived without a hole
    closed: bool  # the chain ends with an `eof` segment: the file is complete
    holes: tuple[tuple[int, int], ...]  # archived ranges that do not connect: (from, to)


def chain(segments: Iterable[SegmentKey]) -> FileChain | None:
    """Walk one file's segments from 0, preferring the longest at each step."""
    by_start: dict[int, SegmentKey] = {}
    for seg in segments:
        best = by_start.get(seg.start)
        if best is None or (seg.end, seg.kind == "eof") > (best.end, best.kind == "eof"):
            by_start[seg.start] = seg
    if not by_start:
        return None
    file = next(iter(by_start.values())).file
    picked: list[SegmentKey] = []
    position = 0
    closed = False
    while position in by_start and not closed:
        seg = by_start[position]
        picked.append(seg)
        closed = seg.kind == "eof"
        if seg.end == position and not closed:
            break
        position = seg.end
    # after an eof only empty eof markers may follow (a crash-closed file noticed twice)
    later = sorted(s for s, seg in by_start.items() if s >= position and seg not in picked)
    if closed:
        later = [start for start in later if by_start[start].size > 0]
    holes = ((position, later[0]),) if later else ()
    return FileChain(file, tuple(picked), position, closed, holes)


def group_by_file(segments: Iterable[SegmentKey]) -> dict[str, list[SegmentKey]]:
    files: dict[str, list[SegmentKey]] = {}
    for seg in segments:
        files.setdefault(seg.file, []).append(seg)
    return files


def file_order(name: str) -> tuple[str, int]:
    """Sort key for binlog file names: base name, then the numeric extension."""
    base, _, number = name.rpartition(".")
    return (base, int(number)) if number.isdigit() else (name, -1)
