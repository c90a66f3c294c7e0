"""Apply retention: delete the provider's snapshots first, then the manifest.

Fail closed: retention acts only on a complete picture of the repository. A manifest that
cannot be read or parsed (it still names a set, whose binlogs we cannot tell), a LIST that
fails, or a key under `binlog/` the layout cannot name stops every deletion of the run, and
the document's `refused` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backupd.binlog import retention
from backupd.config import RetentionSection
from backupd.errors import ArchiveCorrupt, BackupdError, PruneRefused, StorageError
from backupd.log import get_logger
from backupd.snapshot.catalog import FAILED, Catalog, SnapshotSet
from backupd.snapshot.providers.base import SnapshotProvider
from backupd.snapshot.retention import plan_retention

_log = get_logger("snapshot")

# Values of the `reason` label of backupd_prune_refused_total.
UNREADABLE_MANIFEST = "unreadable_manifest"
LISTING_ERROR = "listing_error"
UNPARSABLE_OBJECT = "unparsable_object"
REFUSAL_KINDS = (UNREADABLE_MANIFEST, LISTING_ERROR, UNPARSABLE_OBJECT)


@dataclass(frozen=True)
class Refusal:
    kind: str  # one of REFUSAL_KINDS
    detail: str


@dataclass(frozen=True)
class Survey:
    """Everything retention decides from, and why it must not decide at all."""

    sets: list[SnapshotSet]
    unreadable: list[str]
    archived: list[retention.ArchivedFile]
    refusals: list[Refusal]
    timelines: retention.TimelineMap = field(default_factory=lambda: retention.TimelineMap([]))


def survey(catalog: Catalog) -> Survey:
    try:
        listing = catalog.listing()
        archive = retention.list_archive(catalog.store)
        timelines = retention.TimelineMap.read(catalog.store, archive.clusters)
    except ArchiveCorrupt as exc:  # an unreadable timeline history: which stream is whose?
        return Survey([], [], [], [Refusal(UNPARSABLE_OBJECT, exc.message)])
    except StorageError as exc:
        refusal = Refusal(LISTING_ERROR, f"cannot list the repository: {exc.message}")
        return Survey([], [], [], [refusal])
    refusals = [
        Refusal(UNREADABLE_MANIFEST, f"manifest of set {item.set_id} unreadable ({item})")
        for item in listing.unreadable
    ]
    refusals += [
        Refusal(UNPARSABLE_OBJECT, f"{key} is not a binlog segment, manifest or gap")
        for key in archive.strangers
    ]
    refusals += [  # a set whose start cannot be read protects nothing: binlogs would go
        Refusal(
            UNPARSABLE_OBJECT, f"set {s.set_id} names no binlog file:position ({s.coordinate!r})"
        )
        for s in listing.sets
        if s.coordinate and not retention.coordinate_file(s)
    ]
    unreadable = [str(item) for item in listing.unreadable]
    return Survey(listing.sets, unreadable, archive.files, refusals, timelines)


def refusal_document(refusals: list[Refusal]) -> dict[str, Any]:
    error = PruneRefused(reason="; ".join(r.detail for r in refusals))
    return {
        **error.to_dict(),
        "reasons": [r.detail for r in refusals],
        "kinds": sorted({r.kind for r in refusals}),
    }


def prune(
    catalog: Catalog,
    provider: SnapshotProvider,
    rules: RetentionSection,
    owner: str,
    dry_run: bool,
    now: float,
) -> dict[str, Any]:
    found = survey(catalog)
    if found.refusals:
        _log.error("prune refused", reasons=[r.detail for r in found.refusals], dry_run=dry_run)
        return {
            "dry_run": dry_run,
            "at": now,
            "keep": [],
            "delete": [],
            "deleted": [],
            "binlog_files": [],
            "errors": [],
            "unreadable": found.unreadable,
            "refused": refusal_document(found.refusals),
        }
    sets = found.sets
    plan = plan_retention(sets, rules, owner)
    by_id = {s.set_id: s for s in sets}
    deleted: list[str] = []
    errors: list[str] = []
    for set_id in [] if dry_run else plan.delete:
        record = by_id[set_id]
        if record.volumes and record.provider != provider.name:
            errors.append(f"{set_id}: taken by the {record.provider} provider; left in place")
            continue
        try:
            if record.volumes or record.state == FAILED:  # late arrivals of a failed set too
                provider.delete(record)
            catalog.delete(set_id)
            deleted.append(set_id)
            _log.info("pruned snapshot set", set_id=set_id, state=record.state)
        except BackupdError as exc:
            errors.append(f"{set_id}: {exc.message}")
    gone = set(deleted if not dry_run else plan.delete)
    kept = [s for s in sets if s.set_id not in gone]
    timelines = found.timelines
    old_binlogs = retention.deletable(
        kept, found.archived, timelines.stream_of, timelines.crossings(kept)
    )
    if not dry_run:
        errors += retention.delete_files(catalog.store, old_binlogs)
    return {
        "dry_run": dry_run,
        "at": now,
        "keep": [{"set_id": k, "rules": v} for k, v in sorted(plan.keep.items())],
        "delete": plan.delete,
        "deleted": deleted,
        # archived binlog files older than every kept set's coordinate: go with the sets
        "binlog_files": [f"{f.stream}/{f.file}" for f in old_binlogs],
        "errors": errors,
        "unreadable": found.unreadable,
        "refused": None,
    }
