"""The repository as the planner sees it: snapshot points, binlog segments and gaps.

Read from the catalog and a LIST of the binlog archive alone, so a restore works on a fresh
host with nothing but the `[storage]` section. Where compaction left overlapping segments,
the longest wins (the short ones it replaced may be deleted any moment).
"""

from __future__ import annotations

from dataclasses import dataclass

from backupd.binlog import fetch, layout
from backupd.errors import UsageError
from backupd.restore.plan import Gap, Position, Segment, SnapshotPoint
from backupd.snapshot.catalog import COMPLETED, Catalog, SnapshotSet
from backupd.storage import ObjectStore


@dataclass(frozen=True)
class Repository:
    """Everything a plan for one server is made from."""

    server: str
    sets: dict[str, SnapshotSet]
    points: list[SnapshotPoint]
    segments: list[Segment]
    keys: dict[str, layout.SegmentKey]  # segment key -> what its name says (for fetching)
    gaps: list[Gap]
    broken_manifests: list[str]


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
    return Segment(
        seg.key,
        seg.file,
        seg.start,
        seg.end,
        seg.first_time,
        seg.last_time,
        seg.first_gtid,
        seg.last_gtid,
        closes_file=seg.kind == "eof",
    )


def load(
    store: ObjectStore, server: str | None = None, allow_crash: bool = False, provider: str = ""
) -> Repository:
    """Read the repository for `server` (or the only server archived); `provider` limits the
    starting points to that provider's sets (a drill on this host needs local images)."""
    chosen = fetch.pick_server(store, server)
    sets, broken = Catalog(store).list()
    mine = [s for s in sets if not s.server_identity or s.server_identity == chosen]
    mine = [s for s in mine if not provider or s.provider == provider]
    points = [p for s in mine if (p := snapshot_point(s, allow_crash)) is not None]
    keys = [
        seg
        for info in store.list(layout.server_prefix(chosen))
        if (seg := layout.parse_segment(info.key)) is not None
    ]
    kept = longest_first(keys)
    gaps = [
        Gap(Position(g.from_file, g.from_pos), Position(g.to_file, g.to_pos))
        for g in fetch.gaps(store, chosen)
    ]
    return Repository(
        chosen,
        {s.set_id: s for s in mine},
        points,
        [to_segment(k) for k in kept],
        {k.key: k for k in kept},
        gaps,
        broken,
    )


def require_set(repo: Repository, set_id: str) -> SnapshotSet:
    try:
        return repo.sets[set_id]
    except KeyError:
        raise UsageError(f"no snapshot set {set_id!r} for server {repo.server}") from None
