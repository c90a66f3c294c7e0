"""Restore planning, pure: which snapshot set, which binlog segments, and why not.

Inputs come from the repository alone (the snapshot catalog and a LIST of binlog segment
keys). The planner picks the newest usable snapshot at or before the target whose archived
binlog chain runs without a hole from the snapshot's coordinate to the target, and refuses
— naming the hole, the gap or the bound — rather than restore to anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from backupd.binlog.extent import EOF, TX, Extent, HasExtent
from backupd.errors import BackupdError
from backupd.restore import mysql_gtid
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
class Segment(HasExtent):
    """One archived byte range [start, end) of one binlog file, and its object's key."""

    key: str
    extent: Extent

    @property
    def closes_file(self) -> bool:
        """It ends with the ROTATE that closes the file."""
        return self.kind == EOF

    @property
    def ends_transaction(self) -> bool:
        """Its last event is a commit."""
        return self.kind == TX

    @property
    def number(self) -> int:
        return file_number(self.file)


@dataclass(frozen=True)
class Gap:
    """An archive gap recorded by the archiver: events in [start, end) are not in the archive."""

    start: Position
    end: Position


@dataclass(frozen=True)
class Leg:
    """The part of a replay that reads one timeline: from `start` to `stop` (exclusive,
    a transaction boundary; None on the last leg, where the target decides)."""

    timeline: int
    start: Position
    stop: Position | None
    segments: tuple[Segment, ...]

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(segment.file for segment in self.segments)) or [self.start.file]


@dataclass(frozen=True)
class Plan:
    snapshot: SnapshotPoint
    segments: tuple[Segment, ...]
    start: Position  # replay starts here (the snapshot's coordinate)
    target: Target
    reach: Position  # the chain covers up to here; the exact end point is resolved from events
    legs: tuple[Leg, ...] = ()  # one per timeline crossed, in order

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(segment.file for segment in self.segments))

    @property
    def path(self) -> tuple[Leg, ...]:
        """The legs; a plan made for one timeline has one implicit leg."""
        return self.legs or (Leg(0, self.start, None, self.segments),)


@dataclass(frozen=True)
class TimelineInput:
    """One timeline of a lineage, as the planner needs it."""

    timeline: int
    points: Sequence[SnapshotPoint]
    segments: Sequence[Segment]
    gaps: Sequence[Gap] = ()
    parent_end: Position | None = None  # where a plan leaves the parent (None: cannot cross)
    child_start: Position | None = None  # where it continues on this timeline
    why: str = ""  # how the timeline began (for refusals)


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
    if isinstance(target, GtidTarget) and target.uuid:  # MySQL: a set of intervals per uuid
        return mysql_gtid.reach(snapshot.gtid, target.uuid) <= target.sequence
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
    if not any(segment.last_time >= moment for segment in chain.segments):
        if chain.broken:
            return (), chain.broken
        newest = max((segment.last_time for segment in chain.segments), default=0)
        return (), (
            f"target {target} is after the newest archived event ({newest}); "
            "use 'latest' to restore everything archived"
        )
    # Never filter by timestamps (they can go backwards: SET TIMESTAMP, a stepped clock, a
    # long statement ending after a rotation): keep the contiguous chain up to the first
    # segment that ends with a commit later than the target. The end-point walk stops at
    # the first such commit, which lies at or before that segment's end.
    for i, segment in enumerate(chain.segments):
        if segment.ends_transaction and segment.last_time > moment:
            return chain.segments[: i + 1], ""
    return chain.segments, ""


def _trim_to_gtid(chain: Chain, target: GtidTarget) -> tuple[tuple[Segment, ...], str]:
    if target.uuid:  # MySQL segments record no GTIDs: the end-point walk finds it
        return chain.segments, ""
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


def plan_lineage(target: Target, lineage: Sequence[TimelineInput]) -> Plan:
    """Plan to `target` on the last timeline of `lineage` (oldest first): from a set on it,
    else from a set on an ancestor, crossing each branch exactly at its recorded point."""
    if not lineage:
        raise RestoreImpossible("the archive has no timeline")
    last = lineage[-1]
    refusals: list[str] = []
    try:
        plan = make_plan(target, last.points, last.segments, last.gaps)
        leg = Leg(last.timeline, plan.start, None, plan.segments)
        return Plan(plan.snapshot, plan.segments, plan.start, target, plan.reach, (leg,))
    except RestoreImpossible as exc:
        refusals.append(f"timeline {last.timeline}: {_reason(exc)}")
    tail: list[Leg] = []  # the legs after the ancestor being tried
    for index in range(len(lineage) - 1, 0, -1):
        child, parent = lineage[index], lineage[index - 1]
        if child.parent_end is None or child.child_start is None:
            refusals.append(
                f"timeline {child.timeline} cannot be crossed into from timeline "
                f"{parent.timeline} ({child.why or 'its branch point is not known exactly'}); "
                f"a restore on it needs a snapshot taken on it"
            )
            break
        if index == len(lineage) - 1:
            leg, why = _leg(child, child.child_start, target)
        else:
            leg, why = _leg(child, child.child_start, lineage[index + 1].parent_end)
        if why:
            refusals.append(f"timeline {child.timeline} from {child.child_start}: {why}")
            break
        tail.insert(0, leg)
        end = child.parent_end
        try:
            first = make_plan(CoordinateTarget(end.file, end.pos), parent.points, parent.segments,
                              parent.gaps)  # fmt: skip
        except RestoreImpossible as exc:
            refusals.append(f"timeline {parent.timeline} up to {end}: {_reason(exc)}")
            continue
        if not _snapshot_precedes(first.snapshot, target):
            refusals.append(f"target {target} is before set {first.snapshot.set_id}")
            continue
        legs = (Leg(parent.timeline, first.start, end, first.segments), *tail)
        segments = tuple(segment for each in legs for segment in each.segments)
        final = legs[-1]
        reach = (
            Position(final.segments[-1].file, final.segments[-1].end)
            if final.segments
            else final.start
        )
        return Plan(first.snapshot, segments, first.start, target, reach, legs)
    raise RestoreImpossible("; ".join(refusals))


def _reason(exc: RestoreImpossible) -> str:
    return exc.message.removeprefix("Restore impossible: ")


def _leg(
    timeline: TimelineInput, start: Position, goal: Target | Position | None
) -> tuple[Leg, str]:
    """The segments of `timeline` from `start` to `goal`: the target on the last leg, or
    the position where the next timeline branched off (exclusive of nothing after it)."""
    if isinstance(goal, Position):
        if goal == start:
            return Leg(timeline.timeline, start, goal, ()), ""
        chain = follow_chain(index_segments(timeline.segments), start)
        needed, why = _trim_to_coordinate(chain, goal)
        stop: Position | None = goal
    else:
        chain = follow_chain(index_segments(timeline.segments), start)
        needed, why = _trim(chain, goal or LatestTarget())
        stop = None
    return Leg(timeline.timeline, start, stop, needed), why or _crossed_gap(
        start, needed, timeline.gaps
    )
