"""Restore planning, pure: which snapshot set, which binlog segments, and why not.

Inputs come from the repository alone (the snapshot catalog and a LIST of binlog segment
keys). The planner picks the newest usable snapshot at or before the target whose archived
binlog chain runs without a hole from the snapshot's coordinate to the target, and refuses
— naming the hole, the gap or the bound — rather than restore to anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from backupd.errors import BackupdError
from backupd.restore_target import (
    CoordinateTarget,
    GtidTarget,
    LatestTarget,
    Target,
    TimeTarget,
)


class RestoreImpossible(BackupdError):
    """Restore impossible: {message}"""

    code = "restore_impossible"
    exit_code = 1
    http_status = 409


def file_number(name: str) -> int:
    """mysql-bin.000042 -> 42 (binlog files sort by their numeric suffix)."""
    return int(name.rsplit(".", 1)[1])


@dataclass(frozen=True, order=True)
class Position:
    """A binlog coordinate, ordered by file number then byte offset."""

    number: int = field(init=False, repr=False)
    file: str = field(compare=False)
    pos: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", file_number(self.file))

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


@dataclass(frozen=True)
class Gtid:
    domain: int
    server_id: int
    sequence: int

    @classmethod
    def parse(cls, text: str) -> Gtid:
        domain, server_id, sequence = (int(part) for part in text.split("-"))
        return cls(domain, server_id, sequence)

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.sequence}"


def gtid_state(text: str) -> dict[int, Gtid]:
    """A MariaDB GTID position ("0-1-10,1-2-7") as domain -> last GTID."""
    state = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        gtid = Gtid.parse(part)
        state[gtid.domain] = gtid
    return state


@dataclass(frozen=True)
class SnapshotPoint:
    set_id: str
    taken_at: float  # when commits were blocked: the snapshot's point in time
    coordinate: Position
    gtid: str  # the server's GTID position at the lock
    usable: bool = True  # completed, consistent, present at the provider
    why_unusable: str = ""


@dataclass(frozen=True)
class Segment:
    """One archived byte range [start, end) of one binlog file."""

    key: str
    file: str
    start: int
    end: int
    first_ts: int
    last_ts: int
    first_gtid: str = ""  # MariaDB GTIDs of the first/last transaction inside, if any
    last_gtid: str = ""
    closes_file: bool = False  # ends with the ROTATE that closes the file

    @property
    def number(self) -> int:
        return file_number(self.file)


@dataclass(frozen=True)
class Gap:
    """An archive gap recorded by the archiver: events in [start, end) are not in the archive."""

    start: Position
    end: Position


@dataclass(frozen=True)
class Plan:
    snapshot: SnapshotPoint
    segments: tuple[Segment, ...]
    start: Position  # replay starts here (the snapshot's coordinate)
    target: Target
    reach: Position  # the chain covers up to here; the exact end point is resolved from events

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(segment.file for segment in self.segments))


@dataclass(frozen=True)
class Chain:
    segments: tuple[Segment, ...]
    end: Position  # first byte NOT covered
    broken: str = ""  # why the chain stops before the archive's head ("" = reached the head)


def index_segments(segments: Iterable[Segment]) -> dict[int, list[Segment]]:
    by_file: dict[int, list[Segment]] = {}
    for segment in segments:
        by_file.setdefault(segment.number, []).append(segment)
    for items in by_file.values():
        items.sort(key=lambda s: (s.start, s.end))
    return by_file


def follow_chain(by_file: dict[int, list[Segment]], start: Position) -> Chain:
    """Segments from `start` on, each starting where the previous ended, across rotations."""
    chain: list[Segment] = []
    number, name, pos = start.number, start.file, start.pos
    newest = max(by_file, default=number)
    while True:
        segments = by_file.get(number, [])
        current = next((s for s in segments if s.start <= pos < s.end), None)
        if current is not None:
            chain.append(current)
            pos = current.end
            continue
        if any(s.closes_file and s.end == pos for s in segments):
            number, name, pos = number + 1, _next_name(name), 0
            if number in by_file:
                continue
            broken = f"binlog file {name} is missing from the archive" if newest > number else ""
            return Chain(tuple(chain), Position(name, 4), broken)
        end = Position(name, pos)
        later = [s for s in segments if s.start > pos]
        if later:
            broken = f"no archived segment covers {end} (the next starts at {later[0].start})"
        elif newest > number:
            broken = f"the archive of {name} stops at {pos} although later files exist"
        else:
            broken = ""
        return Chain(tuple(chain), end, broken)


def _next_name(name: str) -> str:
    base, digits = name.rsplit(".", 1)
    return f"{base}.{int(digits) + 1:0{len(digits)}d}"


def _snapshot_precedes(snapshot: SnapshotPoint, target: Target) -> bool:
    if isinstance(target, TimeTarget):  # event times have 1 s resolution: T means T.999
        return int(snapshot.taken_at) <= target.timestamp
    if isinstance(target, CoordinateTarget):
        return snapshot.coordinate <= Position(target.file, target.position)
    if isinstance(target, GtidTarget):
        reached = gtid_state(snapshot.gtid).get(target.domain)
        return reached is None or reached.sequence <= target.sequence
    return True


def _trim(chain: Chain, target: Target) -> tuple[tuple[Segment, ...], str]:
    """Segments needed to reach `target` along `chain`, or why the chain falls short."""
    if isinstance(target, LatestTarget):  # a hole before the head: latest is not reachable
        return (chain.segments, "") if not chain.broken else ((), chain.broken)
    if isinstance(target, CoordinateTarget):
        return _trim_to_coordinate(chain, Position(target.file, target.position))
    if isinstance(target, TimeTarget):
        return _trim_to_time(chain, target)
    return _trim_to_gtid(chain, target)


def _trim_to_coordinate(chain: Chain, goal: Position) -> tuple[tuple[Segment, ...], str]:
    for i, segment in enumerate(chain.segments):
        if segment.number == goal.number and segment.start < goal.pos <= segment.end:
            return chain.segments[: i + 1], ""
    return (), f"the archive chain ends at {chain.end}, before {goal}" + (
        f" ({chain.broken})" if chain.broken else ""
    )


def _trim_to_time(chain: Chain, target: TimeTarget) -> tuple[tuple[Segment, ...], str]:
    moment = target.at.timestamp()
    if not any(segment.last_ts >= moment for segment in chain.segments):
        if chain.broken:
            return (), chain.broken
        newest = max((segment.last_ts for segment in chain.segments), default=0)
        return (), (
            f"target {target} is after the newest archived event ({newest}); "
            "use 'latest' to restore everything archived"
        )
    return tuple(segment for segment in chain.segments if segment.first_ts <= moment), ""


def _trim_to_gtid(chain: Chain, target: GtidTarget) -> tuple[tuple[Segment, ...], str]:
    for i, segment in enumerate(chain.segments):
        first = gtid_state(segment.first_gtid).get(target.domain)
        last = gtid_state(segment.last_gtid).get(target.domain)
        if last is None or last.sequence < target.sequence:
            continue
        if first is None or first.sequence <= target.sequence:
            return chain.segments[: i + 1], ""
    return (), chain.broken or f"GTID {target} is not in the archive"


def make_plan(
    target: Target,
    snapshots: Sequence[SnapshotPoint],
    segments: Iterable[Segment],
    gaps: Sequence[Gap] = (),
) -> Plan:
    """Choose the newest snapshot whose chain reaches `target`; raise RestoreImpossible."""
    by_file = index_segments(segments)
    usable = sorted((s for s in snapshots if s.usable), key=lambda s: s.taken_at, reverse=True)
    if not usable:
        reasons = "; ".join(f"{s.set_id}: {s.why_unusable}" for s in snapshots) or "none recorded"
        raise RestoreImpossible(f"no usable snapshot set ({reasons})")
    candidates = [s for s in usable if _snapshot_precedes(s, target)]
    if not candidates:
        oldest = usable[-1]
        raise RestoreImpossible(
            f"target {target} is before the oldest usable snapshot {oldest.set_id} "
            f"({oldest.coordinate}, GTID {oldest.gtid or '-'})"
        )
    refusals = []
    for snapshot in candidates:
        chain = follow_chain(by_file, snapshot.coordinate)
        needed, why = _trim(chain, target)
        gap = _crossed_gap(snapshot.coordinate, needed, gaps)
        if why or gap:
            refusals.append(f"from {snapshot.set_id} at {snapshot.coordinate}: {why or gap}")
            continue
        reach = Position(needed[-1].file, needed[-1].end) if needed else snapshot.coordinate
        return Plan(snapshot, needed, snapshot.coordinate, target, reach)
    raise RestoreImpossible("; ".join(refusals))


def _crossed_gap(start: Position, needed: Sequence[Segment], gaps: Sequence[Gap]) -> str:
    if not needed:
        return ""
    end = Position(needed[-1].file, needed[-1].end)
    for gap in gaps:
        if gap.start < end and start < gap.end:
            return f"the archive has a recorded gap from {gap.start} to {gap.end}"
    return ""
