"""Plan, fetch and resolve: from a TARGET to verified local binlog files and an exact end.

Shared by `restore plan` (which stops here), `restore replay` and `drill`. Every object the
plan needs is fetched and its checksums verified, so a plan that prints is a plan that runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupd.binlog import layout
from backupd.errors import ArchiveCorrupt, ObjectMissing
from backupd.restore import repository, tx_timelines
from backupd.restore.around import Around, Located, split
from backupd.restore.endpoint import EndPoint
from backupd.restore.fetcher import Fetcher
from backupd.restore.object_cache import ObjectCache
from backupd.restore.plan import Leg, Plan, RestoreImpossible
from backupd.restore.replay import ReplayRange
from backupd.restore_target import CoordinateTarget, Target, TimeTarget
from backupd.snapshot.catalog import SnapshotSet
from backupd.storage import ObjectStore


@dataclass(frozen=True)
class LegFiles:
    """One leg of the plan with its rebuilt files and where the replay of it stops."""

    leg: Leg
    files: list[Path]  # from the leg's first file to its stop's (or the end point's)
    end: EndPoint  # the leg's own end point (the last leg's is the restore's)
    skipped: tuple[Located, ...] = ()  # --skip: transactions of this leg left out

    def replay_range(self) -> ReplayRange | None:
        """None when the leg replays nothing (it ends where it starts)."""
        if not self.end.transactions:
            return None
        last = self.end.position.number
        files = [f for f in self.files if layout.file_order(f.name)[1] <= last]
        return ReplayRange(files, self.leg.start.pos, self.end.position.pos)


@dataclass(frozen=True)
class Prepared:
    server: str
    plan: Plan
    snapshot: SnapshotSet
    files: list[Path]  # rebuilt binlog files of every leg, in replay order
    end: EndPoint  # of the whole restore: the last leg's position, all legs' transactions
    cluster: str = ""
    timeline: int = 0  # the timeline the target is on (0: an archive from before timelines)
    legs: tuple[LegFiles, ...] = ()
    around: Around = field(default_factory=Around)  # --before / --skip

    @property
    def timeline_path(self) -> list[dict[str, Any]]:
        """Timelines the replay reads, in order, with where it enters and leaves each."""
        return [
            {
                "timeline": part.leg.timeline,
                "from": str(part.leg.start),
                "to": str(part.end.position),
                "transactions": part.end.transactions,
            }
            for part in self.legs
            if part.leg.timeline
        ]

    @property
    def replay_files(self) -> list[Path]:
        return [f for part in self.legs if (r := part.replay_range()) for f in r.files]

    def replay_ranges(self) -> list[ReplayRange]:
        return [
            piece
            for part in self.legs
            if (r := part.replay_range()) is not None
            for piece in split(r, part.skipped)
        ]

    @property
    def skipped(self) -> list[Located]:
        return [s for part in self.legs for s in part.skipped]

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "server": self.server,
            "cluster": self.cluster or None,
            "timeline": self.timeline or None,
            "timeline_path": self.timeline_path,
            "target": f"before {self.around.before}" if self.around.before else str(plan.target),
            "snapshot": {
                "set_id": plan.snapshot.set_id,
                "taken_at": plan.snapshot.taken_at,
                "coordinate": str(plan.start),
                "gtid": plan.snapshot.gtid,
                "provider": self.snapshot.provider,
                "volumes": [v.snapshot_id for v in self.snapshot.volumes],
            },
            "segments": [s.key for s in plan.segments],
            "files": [f.name for f in self.replay_files],
            "end": self.end.to_dict(),
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": [self.around.warning] if self.around.warning else [],
        }


def prepare(
    store: ObjectStore,
    target: Target,
    workdir: Path,
    server: str | None = None,
    allow_crash: bool = False,
    provider: str = "",
    cluster: str = "",
    timeline: int | None = None,
    around: Around | None = None,
    pinned_set: str = "",
    fetcher: Fetcher | None = None,
) -> Prepared:
    """Raise RestoreImpossible naming the gap, bound or bad object that prevents it.

    `pinned_set`: start from that set only (a restore record's). Objects come through
    `fetcher` (the shared cache); without one, a cache next to `workdir`.
    """
    around = around or Around()
    fetcher = fetcher or Fetcher(ObjectCache(workdir.parent / "objects"))
    repo = repository.load(store, server, allow_crash, provider, cluster, timeline)
    if pinned_set:
        repo = repository.pinned(repo, pinned_set)
    try:
        return _prepare(store, repo, target, workdir, around, fetcher)
    except RestoreImpossible:
        # a name found only off the chosen history: say where it is instead
        tx_timelines.refuse_off_timeline(store, repo, around.refs, workdir / "named", fetcher)
        raise


def _prepare(
    store: ObjectStore,
    repo: repository.Repository,
    target: Target,
    workdir: Path,
    around: Around,
    fetcher: Fetcher,
) -> Prepared:
    plan = repository.plan(repo, target)
    record = repository.require_set(repo, plan.snapshot.set_id)
    legs = []
    gtid = plan.snapshot.gtid
    for leg in plan.path:
        directory = workdir / f"tl{leg.timeline:06d}" if leg.timeline else workdir
        files = fetch_files(store, repo, leg, directory, fetcher)
        goal = target if leg.stop is None else CoordinateTarget(leg.stop.file, leg.stop.pos)
        end, skipped = around.resolve(
            files, leg.start, gtid, goal, record.flavor, last=leg.stop is None
        )
        if leg.stop is not None:
            _check_before(target, end, leg)
        legs.append(LegFiles(leg, files, end, skipped))
        gtid = end.gtid_state
    last = legs[-1].end
    total = EndPoint(
        last.position,
        next((p.end.gtid for p in reversed(legs) if p.end.gtid), ""),
        next((p.end.commit_time for p in reversed(legs) if p.end.commit_time), 0),
        sum(p.end.transactions for p in legs),
        last.gtid_state,
        last.gtid_floor,
    )
    all_files = [f for part in legs for f in part.files]
    around.check_found([s for part in legs for s in part.skipped], plan.start, total)
    return Prepared(
        repo.server, plan, record, all_files, total, repo.cluster, repo.timeline, tuple(legs),
        around,
    )  # fmt: skip


def _check_before(target: Target, end: EndPoint, leg: Leg) -> None:
    """A plan that crosses a branch replays the parent up to it: the target must be later."""
    if isinstance(target, TimeTarget) and end.commit_time > target.timestamp:
        raise RestoreImpossible(
            f"target {target} is before timeline {leg.timeline}'s branch point {leg.stop}; "
            f"restore on that timeline instead (--timeline {leg.timeline})"
        )


def fetch_files(
    store: ObjectStore, repo: repository.Repository, leg: Leg, workdir: Path, fetcher: Fetcher
) -> list[Path]:
    """Rebuild each file the leg touches (from offset 0: the format description is needed)."""
    stream = repo.streams.get(leg.timeline, repo.stream)
    chains = []
    for name in leg.files:
        found = repository.chain_of(repo, stream, name)
        if found is None:
            raise RestoreImpossible(f"binlog file {name} is not in the archive")
        chains.append(found)
    try:
        return fetcher.files(store, stream, chains, workdir)
    except (ArchiveCorrupt, ObjectMissing) as exc:
        raise RestoreImpossible(f"archived object unusable: {exc.message}") from exc
