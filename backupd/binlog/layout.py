"""Object keys of the binlog archive: a restore planner finds everything by LIST alone.

Public and stable: `backupd.binlog.archive` reads the archive through these parsers.

    binlog/<cluster>/timelines/tl<id>.json                      a timeline's history (immutable)
    binlog/<stream>/<file>/<start>-<end>_<first_time>-<last_time>_<first_gtid>~<last_gtid>_<kind>_<raw_sha256>_<object_sha256>.<ext>
    binlog/<stream>/<file>/manifest.json
    binlog/<stream>/gaps/<from_file>_<from_pos>_<to_file>_<to_pos>.json
    binlog/<stream>/<file>/index/<start>-<end>_<object_sha256>.json.zst

- `stream`: where one timeline's objects live: `<cluster>/tl<id>` (id: 6 digits), so objects
  of two timelines never share a key. Archives written before timelines keep their objects
  under `<server identity>` (`server_id` on MariaDB, `server_uuid` on MySQL): such a legacy
  stream is adopted as a timeline by a history object naming it (see `archive`).
- `file`: the binlog file name (`mysql-bin.000042`); `start`/`end`: the byte range [start, end)
  of that file, 12 digits each; the first segment of a file starts at 0 (the magic).
- `first_time`/`last_time`: event timestamps (Unix seconds) of the first and last event.
- `first_gtid~last_gtid`: the first and last GTID that begins in the segment (empty when none;
  both left out when the name would exceed 255 bytes).
- `kind`: `tx` ends at a transaction boundary, `mid` inside a transaction, `eof` ends the file.
- `raw_sha256`: of the binlog bytes; `object_sha256`: of the stored object; `ext`: `zst` or
  `bin` (uncompressed).

- `index/...`: the change index of bytes [start, end) of the file (one or several
  consecutive segments; `backupd.binlog.change_index`); `object_sha256` is of the index
  object itself.

A compacted file is one segment [0, size) of kind `eof`; its manifest lists the segments it
replaced. Where segments overlap (compaction not finished), the longest one wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from backupd.binlog.extent import Extent, HasExtent

ROOT = "binlog"
MAX_NAME = 255
_HEX64 = "[0-9a-f]{64}"
_SEGMENT = re.compile(
    r"(?P<start>\d{12})-(?P<end>\d{12})_(?P<first_time>\d+)-(?P<last_time>\d+)_"
    r"(?P<first_gtid>[0-9a-zA-Z:.\-]*)~(?P<last_gtid>[0-9a-zA-Z:.\-]*)_"
    rf"(?P<kind>tx|mid|eof)_(?P<raw_sha256>{_HEX64})_(?P<object_sha256>{_HEX64})"
    r"\.(?P<ext>zst|bin)"
)
_TIMELINE = re.compile(r"tl(?P<id>\d{6})")
_HISTORY = re.compile(r"tl(?P<id>\d{6})\.json")
TIMELINES = "timelines"
INDEX = "index"
_INDEX = re.compile(
    rf"(?P<start>\d{{12}})-(?P<end>\d{{12}})_(?P<object_sha256>{_HEX64})\.json\.zst"
)
_GAP = re.compile(
    r"(?P<from_file>[^/_]+)_(?P<from_pos>\d+)_(?P<to_file>[^/_]+)_(?P<to_pos>\d+)\.json"
)


@dataclass(frozen=True, order=True)
class SegmentKey(HasExtent):
    """Everything a segment's key says about it: its timeline's stream, its extent, and the
    checksums of the bytes and of the stored object."""

    stream: str
    extent: Extent
    raw_sha256: str
    object_sha256: str
    ext: str

    @property
    def key(self) -> str:
        return segment_key(self)


@dataclass(frozen=True, order=True)
class GapKey:
    """A range the archive can never hold: the server purged it before it was archived."""

    stream: str
    from_file: str
    from_pos: int
    to_file: str
    to_pos: int

    @property
    def key(self) -> str:
        name = f"{self.from_file}_{self.from_pos:012d}_{self.to_file}_{self.to_pos:012d}.json"
        return f"{stream_prefix(self.stream)}gaps/{name}"


@dataclass(frozen=True, order=True)
class IndexKey:
    """A change index object: the byte range [start, end) of one file of one stream whose
    transactions it lists, and the sha256 of the object. Within a stream a (file, offset)
    always holds the same byte, so a range says which segments an index covers."""

    stream: str
    file: str
    start: int
    end: int
    object_sha256: str

    @property
    def key(self) -> str:
        name = f"{self.start:012d}-{self.end:012d}_{self.object_sha256}.json.zst"
        return f"{file_prefix(self.stream, self.file)}{INDEX}/{name}"

    def covers(self, seg: SegmentKey) -> bool:
        """Whether this index lists every transaction that commits in `seg`."""
        return (
            (self.stream, self.file) == (seg.stream, seg.file)
            and self.start <= seg.start
            and seg.end <= self.end
        )


def parse_index(key: str) -> IndexKey | None:
    """The change index a key names, or None for any other object."""
    found = split_stream(key)
    if found is None or len(found[1]) != 3 or found[1][1] != INDEX:
        return None
    match = _INDEX.fullmatch(found[1][2])
    if match is None:
        return None
    return IndexKey(
        found[0], found[1][0], int(match["start"]), int(match["end"]), match["object_sha256"]
    )


def stream_prefix(stream: str) -> str:
    return f"{ROOT}/{stream}/"


def file_prefix(stream: str, file: str) -> str:
    return f"{stream_prefix(stream)}{file}/"


def manifest_key(stream: str, file: str) -> str:
    return f"{file_prefix(stream, file)}manifest.json"


def cluster_prefix(cluster: str) -> str:
    return f"{ROOT}/{cluster}/"


def timeline_stream(cluster: str, timeline: int) -> str:
    """Where timeline `timeline` of `cluster` keeps its objects."""
    return f"{cluster}/tl{timeline:06d}"


def history_key(cluster: str, timeline: int) -> str:
    return f"{cluster_prefix(cluster)}{TIMELINES}/tl{timeline:06d}.json"


def parse_history(key: str) -> tuple[str, int] | None:
    """(cluster, timeline id) of a history object's key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[2] != TIMELINES:
        return None
    match = _HISTORY.fullmatch(parts[3])
    return (parts[1], int(match["id"])) if match else None


def segment_key(seg: SegmentKey) -> str:
    gtids = f"{seg.first_gtid}~{seg.last_gtid}"
    name = _segment_name(seg, gtids)
    if len(name.encode()) > MAX_NAME:
        name = _segment_name(seg, "~")
    return file_prefix(seg.stream, seg.file) + name


def _segment_name(seg: SegmentKey, gtids: str) -> str:
    return (
        f"{seg.start:012d}-{seg.end:012d}_{seg.first_time}-{seg.last_time}_{gtids}_"
        f"{seg.kind}_{seg.raw_sha256}_{seg.object_sha256}.{seg.ext}"
    )


def split_stream(key: str) -> tuple[str, list[str]] | None:
    """(stream, the parts after it) of a key under `binlog/`: `<cluster>/tl<id>/...` for a
    timeline's objects, `<server>/...` for a legacy stream; None for history objects."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != ROOT or parts[2] == TIMELINES:
        return None
    if _TIMELINE.fullmatch(parts[2]):
        return f"{parts[1]}/{parts[2]}", parts[3:]
    return parts[1], parts[2:]


def parse_segment(key: str) -> SegmentKey | None:
    """The segment a key names, or None for any other object (manifests, gaps, strangers)."""
    found = split_stream(key)
    if found is None or len(found[1]) != 2:
        return None
    stream, (file, name) = found
    match = _SEGMENT.fullmatch(name)
    if match is None:
        return None
    g = match.groupdict()
    extent = Extent(
        file=file,
        start=int(g["start"]),
        end=int(g["end"]),
        first_time=int(g["first_time"]),
        last_time=int(g["last_time"]),
        first_gtid=g["first_gtid"],
        last_gtid=g["last_gtid"],
        kind=g["kind"],
    )
    return SegmentKey(stream, extent, g["raw_sha256"], g["object_sha256"], g["ext"])


def parse_gap(key: str) -> GapKey | None:
    found = split_stream(key)
    if found is None or len(found[1]) != 2 or found[1][0] != "gaps":
        return None
    match = _GAP.fullmatch(found[1][1])
    if match is None:
        return None
    return GapKey(
        stream=found[0],
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
