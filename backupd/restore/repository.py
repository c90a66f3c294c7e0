"""The repository as the planner sees it: snapshot points, binlog segments and gaps.

Read from the catalog and a LIST of the binlog archive alone, so a restore works on a fresh
host with nothing but the `[storage]` section. Where compaction left overlapping segments,
the longest wins (the short ones it replaced may be deleted any moment).

A plan reads one timeline (default: the cluster's latest) and the snapshot sets taken on it:
a set's timeline is the one its server was writing when the set was taken. Segments of other
timelines never enter the plan, so a restore never replays an abandoned history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from backupd.binlog import layout
from backupd.binlog.archive import ArchiveView, Selected, Timeline, select
from backupd.errors import UsageError
from backupd.restore.plan import (
    Gap,
    Plan,
    Position,
    Segment,
    SnapshotPoint,
    TimelineInput,
    make_plan,
    plan_lineage,
)
from backupd.restore_target import Target
from backupd.snapshot.catalog import COMPLETED, Catalog, SnapshotSet
from backupd.storage import ObjectStore


@dataclass(frozen=True)
class Repository:
    """Everything a plan for one server is made from."""

    server: str  # the identity of the server that wrote the timeline
    stream: str  # where the timeline's objects are
    timeline: int  # 0 for an archive written before timelines
    cluster: str
    sets: dict[str, SnapshotSet]
    points: list[SnapshotPoint]
    segments: list[Segment]
    keys: dict[str, layout.SegmentKey]  # segment key -> what its name says (for fetching)
    gaps: list[Gap]
    broken_manifests: list[str]
    lineage: list[TimelineInput]  # the timeline and its ancestors, oldest first
    streams: dict[int, str]  # timeline -> stream, for every timeline of the lineage
    view: ArchiveView | None = None  # the whole cluster (None: an archive from before timelines)


def chain_of(repo: Repository, stream: str, file: str) -> layout.FileChain | None:
    """The archived segments that rebuild `file` of `stream` whole (None: they do not)."""
    return layout.chain([k for k in repo.keys.values() if k.file == file and k.stream == stream])


def parse_position(text: str) -> Position | None:
    file, _, pos = text.rpartition(":")
    if not file or not pos.isdigit():
        return None
    try:
        return Position(file, int(pos))
    except (ValueError, IndexError):
        return None


def snapshot_point(record: SnapshotSet, allow_crash: bool = False) -> SnapshotPoint | None:
    """The set as a starting point; None when it has no coordinate at all."""
    coordinate = parse_position(record.coordinate)
    if coordinate is None:
        return None
    why = ""
    if record.state != COMPLETED:
        why = f"state {record.state}"
    elif record.consistency != "application" and not allow_crash:
        why = f"{record.consistency}-consistent (pass --allow-crash-consistent to use it)"
    return SnapshotPoint(
        record.set_id,
        record.locked_at or record.started_at,
        coordinate,
        record.gtid,
        usable=not why,
        why_unusable=why,
    )


def longest_first(keys: list[layout.SegmentKey]) -> list[layout.SegmentKey]:
    """Drop segments that a longer one of the same file fully covers."""
    kept: list[layout.SegmentKey] = []
    for file_keys in layout.group_by_file(keys).values():
        reach = -1
        for seg in sorted(file_keys, key=lambda s: (s.start, -s.end)):
            if seg.end <= reach and seg.size > 0:
                continue
            kept.append(seg)
            reach = max(reach, seg.end)
    return kept


def to_segment(seg: layout.SegmentKey) -> Segment:
    return Segment(seg.key, seg.extent)


def on_timeline(record: SnapshotSet, chosen: Selected, timeline: Timeline | None = None) -> bool:
    """Whether a set was taken while its server wrote `timeline` (default: the chosen one)."""
    timeline = timeline or chosen.timeline
    if timeline is None or chosen.view is None:  # an archive from before timelines
        return not record.server_identity or record.server_identity == chosen.identity
    if record.timeline and record.cluster == chosen.cluster:
        return record.timeline == timeline.id  # recorded when the set was taken
    if record.server_identity != timeline.history.identity:
        return False
    written = chosen.view.of_identity(record.server_identity, record.locked_at or record.started_at)
    return written is not None and written.id == timeline.id


def position_of(text: str) -> Position | None:
    return parse_position(text) if text else None


def lineage_inputs(
    chosen: Selected, sets: list[SnapshotSet], allow_crash: bool
) -> tuple[list[TimelineInput], dict[str, layout.SegmentKey], dict[int, str]]:
    """The chosen timeline and its ancestors as the planner reads them (oldest first)."""
    assert chosen.view is not None and chosen.timeline is not None
    inputs: list[TimelineInput] = []
    keys: dict[str, layout.SegmentKey] = {}
    streams: dict[int, str] = {}
    for timeline in chosen.view.lineage(chosen.timeline.id):
        history = timeline.history
        mine = [s for s in sets if on_timeline(s, chosen, timeline)]
        kept = longest_first(timeline.segments)
        keys.update({k.key: k for k in kept})
        streams[timeline.id] = timeline.stream
        crossable = history.crossable
        inputs.append(
            TimelineInput(
                timeline.id,
                [p for s in mine if (p := snapshot_point(s, allow_crash)) is not None],
                [to_segment(k) for k in kept],
                [
                    Gap(Position(g.from_file, g.from_pos), Position(g.to_file, g.to_pos))
                    for g in timeline.gaps
                ],
                position_of(history.parent_end) if crossable else None,
                position_of(history.child_start) if crossable else None,
                f"began by {history.reason}: {history.why}" if history.why else history.reason,
            )
        )
    return inputs, keys, streams


def load(
    store: ObjectStore,
    server: str | None = None,
    allow_crash: bool = False,
    provider: str = "",
    cluster: str = "",
    timeline: int | None = None,
) -> Repository:
    """Read one timeline of the archive (default: the only cluster's latest; by server
    identity for an archive from before timelines); `provider` limits the starting points to
    that provider's sets (a drill on this host needs local images)."""
    chosen = select(store, cluster, timeline, server)
    sets, broken = Catalog(store).list()
    mine = [s for s in sets if on_timeline(s, chosen)]
    mine = [s for s in mine if not provider or s.provider == provider]
    points = [p for s in mine if (p := snapshot_point(s, allow_crash)) is not None]
    if chosen.timeline is not None:
        keys, found_gaps = chosen.timeline.segments, chosen.timeline.gaps
    else:
        listed = [info.key for info in store.list(layout.stream_prefix(chosen.stream))]
        keys = [seg for key in listed if (seg := layout.parse_segment(key)) is not None]
        found_gaps = [g for key in listed if (g := layout.parse_gap(key)) is not None]
    kept = longest_first(keys)
    gaps = [
        Gap(Position(g.from_file, g.from_pos), Position(g.to_file, g.to_pos)) for g in found_gaps
    ]
    lineage: list[TimelineInput] = []
    all_keys = {k.key: k for k in kept}
    streams = {0: chosen.stream}
    if chosen.timeline is not None and chosen.view is not None:
        usable = [s for s in sets if not provider or s.provider == provider]
        lineage, lineage_keys, streams = lineage_inputs(chosen, usable, allow_crash)
        all_keys.update(lineage_keys)
        ancestry = chosen.view.lineage(chosen.timeline.id)  # sets a plan may start from
        mine = [s for s in usable if any(on_timeline(s, chosen, t) for t in ancestry)]
    return Repository(
        chosen.identity,
        chosen.stream,
        chosen.timeline.id if chosen.timeline else 0,
        chosen.cluster,
        {s.set_id: s for s in mine},
        points,
        [to_segment(k) for k in kept],
        all_keys,
        gaps,
        broken,
        lineage,
        streams,
        chosen.view if chosen.timeline is not None else None,
    )


def plan(repo: Repository, target: Target) -> Plan:
    """The plan to `target`: across the timeline's lineage, or in an archive from before
    timelines along its one stream."""
    if repo.lineage:
        return plan_lineage(target, repo.lineage)
    return make_plan(target, repo.points, repo.segments, repo.gaps)


def require_set(repo: Repository, set_id: str) -> SnapshotSet:
    try:
        return repo.sets[set_id]
    except KeyError:
        raise UsageError(
            f"no snapshot set {set_id!r} on timeline {repo.timeline} "
            f"of {repo.cluster or repo.server}"
        ) from None


def pinned(repo: Repository, set_id: str) -> Repository:
    """The repository with `set_id` as the only starting point: a pinned restore replays
    from the set its volumes came from, never from one taken or pruned since."""
    if set_id not in repo.sets:
        raise UsageError(
            f"snapshot set {set_id!r} of the restore record is not on timeline {repo.timeline} "
            f"of {repo.cluster or repo.server} (pruned since, or another --cluster/--timeline)"
        )

    def only(points: Sequence[SnapshotPoint]) -> list[SnapshotPoint]:
        return [p for p in points if p.set_id == set_id]

    return replace(
        repo,
        points=only(repo.points),
        lineage=[replace(t, points=only(t.points)) for t in repo.lineage],
    )
