"""`backupctl verify`: can the repository restore, and to which window? Every problem named.

Checks each completed snapshot set against its provider (local image files present; EBS
snapshots `completed`), each server's binlog chain (holes inside files, missing files,
recorded gaps), the checksums of every archived object (or a random sample), and reports the
recoverable window: the oldest usable snapshot's point to the last archived transaction
reachable from it without a hole.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from backupd.binlog import archive, fetch, layout
from backupd.config import Config
from backupd.errors import ArchiveCorrupt, ObjectMissing, StorageError
from backupd.restore import repository
from backupd.restore.plan import follow_chain, index_segments
from backupd.restore.progress import Meter
from backupd.snapshot.catalog import COMPLETED, Catalog, SnapshotSet
from backupd.storage import ObjectStore


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    sets_checked: int = 0
    objects_checked: int = 0
    objects_total: int = 0
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "sets_checked": self.sets_checked,
            "objects_checked": self.objects_checked,
            "objects_total": self.objects_total,
            "windows": self.windows,
        }


def check_sets(config: Config, sets: list[SnapshotSet], report: Report) -> None:
    completed = [s for s in sets if s.state == COMPLETED]
    report.sets_checked = len(completed)
    ebs = [s for s in completed if s.provider == "ebs"]
    for record in completed:
        if record.provider == "local":
            for volume in record.volumes:
                path = os.path.join(config.snapshot.local.directory, volume.snapshot_id)
                if not os.path.isfile(path):
                    report.problems.append(f"set {record.set_id}: image {path} is missing")
    if ebs:
        check_ebs(config, ebs, report)


def check_ebs(config: Config, sets: list[SnapshotSet], report: Report) -> None:
    section = config.snapshot.ebs
    client = boto3.client(
        "ec2", region_name=section.region or None, endpoint_url=section.endpoint_url or None
    )
    wanted = {v.snapshot_id: s.set_id for s in sets for v in s.volumes}
    states: dict[str, str] = {}
    try:
        ids = sorted(wanted)
        for start in range(0, len(ids), 200):
            answer = client.describe_snapshots(
                Filters=[{"Name": "snapshot-id", "Values": ids[start : start + 200]}]
            )
            states.update({s["SnapshotId"]: s["State"] for s in answer.get("Snapshots", [])})
    except (BotoCoreError, ClientError) as exc:
        report.problems.append(f"DescribeSnapshots failed: {exc}")
        return
    for snapshot_id, set_id in sorted(wanted.items()):
        state = states.get(snapshot_id)
        if state != "completed":
            report.problems.append(
                f"set {set_id}: EBS snapshot {snapshot_id} is {state or 'missing'}"
            )


def check_chain(repo: repository.Repository, report: Report) -> None:
    """Holes inside files, files missing between archived ones, recorded gaps."""
    keys = list(repo.keys.values())
    by_file = layout.group_by_file(keys)
    names = sorted(by_file, key=layout.file_order)
    for name in names:
        found = layout.chain(by_file[name])
        if found is None:
            continue
        if found.holes:
            start, end = found.holes[0]
            report.problems.append(f"server {repo.server}: {name} bytes {start}..{end} missing")
        elif not found.closed and name != names[-1]:
            report.problems.append(
                f"server {repo.server}: {name} ends at {found.end} without its ROTATE "
                "although later files exist"
            )
    numbers = [layout.file_order(n)[1] for n in names]
    for before, after in itertools.pairwise(numbers):
        if after != before + 1:
            report.problems.append(
                f"server {repo.server}: binlog files between number {before} and {after} "
                "are missing"
            )
    for gap in repo.gaps:
        report.problems.append(
            f"server {repo.server}: recorded gap {gap.start} .. {gap.end} (purged unarchived)"
        )


def check_objects(
    store: ObjectStore,
    repo: repository.Repository,
    sample: int | None,
    report: Report,
    on_progress: Callable[[Meter], None] | None = None,
) -> None:
    keys = sorted(repo.keys.values())
    report.objects_total += len(keys)
    if sample is not None and sample < len(keys):
        keys = random.sample(keys, sample)
    meter = Meter("verify", sum(seg.size for seg in keys))
    for seg in keys:
        if on_progress is not None:
            on_progress(meter)
        try:
            fetch.load_segment(store, seg)
        except ObjectMissing:
            report.problems.append(f"object missing: {seg.key}")
        except (ArchiveCorrupt, StorageError) as exc:
            report.problems.append(f"object unusable: {exc.message}")
        report.objects_checked += 1
        meter.add(seg.size)
    meter.finished = True
    if on_progress is not None and keys:
        on_progress(meter)


def window(repo: repository.Repository) -> dict[str, Any]:
    usable = sorted((p for p in repo.points if p.usable), key=lambda p: p.taken_at)
    if not usable:
        return {"earliest": None, "latest": None, "why": "no usable snapshot set"}
    oldest = usable[0]
    chain = follow_chain(index_segments(repo.segments), oldest.coordinate)
    last_time = max((s.last_time for s in chain.segments), default=int(oldest.taken_at))
    return {
        "earliest": {
            "set_id": oldest.set_id,
            "time": oldest.taken_at,
            "coordinate": str(oldest.coordinate),
        },
        "latest": {"time": max(last_time, int(usable[-1].taken_at)), "coordinate": str(chain.end)},
        "why": chain.broken,
    }


def verify(
    config: Config,
    store: ObjectStore,
    sample: int | None = None,
    on_progress: Callable[[Meter], None] | None = None,
) -> Report:
    report = Report()
    sets, broken = Catalog(store).list()
    report.problems += [f"unreadable manifest {b}" for b in broken]
    check_sets(config, sets, report)
    streams = archived_streams(store)
    if not streams:
        report.problems.append("no binlog archive in the repository")
    for name, (cluster, timeline, server) in streams.items():
        repo = repository.load(store, server, cluster=cluster, timeline=timeline)
        check_chain(repo, report)
        check_objects(store, repo, sample, report, on_progress)
        report.windows[name] = window(repo)
        if report.windows[name]["why"]:
            report.problems.append(f"{name}: {report.windows[name]['why']}")
    return report


def archived_streams(store: ObjectStore) -> dict[str, tuple[str, int | None, str | None]]:
    """Every timeline of every cluster, and legacy archives no cluster adopted, by name."""
    found: dict[str, tuple[str, int | None, str | None]] = {}
    adopted = set()
    for cluster in archive.clusters(store):
        view = archive.Archive(store, cluster).read()
        for number, timeline in sorted(view.timelines.items()):
            found[f"cluster {cluster} timeline {number}"] = (cluster, number, None)
            adopted.add(timeline.stream)
    for legacy in archive.legacy_streams(store):
        if legacy not in adopted:
            found[f"server {legacy}"] = ("", None, legacy)
    return found
