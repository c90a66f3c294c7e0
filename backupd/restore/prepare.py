"""Plan, fetch and resolve: from a TARGET to verified local binlog files and an exact end.

Shared by `restore plan` (which stops here), `restore replay` and `drill`. Every object the
plan needs is fetched and its checksums verified, so a plan that prints is a plan that runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.binlog import fetch, layout
from backupd.errors import ArchiveCorrupt, ObjectMissing
from backupd.restore import repository
from backupd.restore.endpoint import EndPoint, resolve
from backupd.restore.plan import Plan, RestoreImpossible, make_plan
from backupd.restore_target import Target
from backupd.snapshot.catalog import SnapshotSet
from backupd.storage import ObjectStore


@dataclass(frozen=True)
class Prepared:
    server: str
    plan: Plan
    snapshot: SnapshotSet
    files: list[Path]  # rebuilt binlog files, from the snapshot's file to the end point's
    end: EndPoint

    @property
    def replay_files(self) -> list[Path]:
        last = self.end.position.number
        return [f for f in self.files if layout.file_order(f.name)[1] <= last]

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "server": self.server,
            "target": str(plan.target),
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
        }


def prepare(
    store: ObjectStore,
    target: Target,
    workdir: Path,
    server: str | None = None,
    allow_crash: bool = False,
    provider: str = "",
) -> Prepared:
    """Raise RestoreImpossible naming the gap, bound or bad object that prevents it."""
    repo = repository.load(store, server, allow_crash, provider)
    plan = make_plan(target, repo.points, repo.segments, repo.gaps)
    record = repository.require_set(repo, plan.snapshot.set_id)
    files = fetch_files(store, repo, plan, workdir)
    end = resolve(files, plan.start, plan.snapshot.gtid, target, record.flavor)
    return Prepared(repo.server, plan, record, files, end)


def fetch_files(
    store: ObjectStore, repo: repository.Repository, plan: Plan, workdir: Path
) -> list[Path]:
    """Rebuild each file the plan touches (from offset 0: the format description is needed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = plan.files or [plan.start.file]
    paths = []
    for name in names:
        parts = [k for k in repo.keys.values() if k.file == name]
        found = layout.chain(parts)
        if found is None:
            raise RestoreImpossible(f"binlog file {name} is not in the archive")
        try:
            rebuilt = fetch.rebuild_file(store, repo.server, found, workdir)
        except (ArchiveCorrupt, ObjectMissing) as exc:
            raise RestoreImpossible(f"archived object unusable: {exc.message}") from exc
        paths.append(workdir / rebuilt.file)
    return paths
