"""`backupctl binlog index`: write the change index of archived segments that have none
(archives from before the index, segments uploaded while indexing failed or was off).

From the repository alone: each file with an unindexed segment is read from its first
segment on (the index needs the file's format description and, across a `mid` cut, the
table maps before it), every checksum verified as `binlog fetch` does. Each index object is
stored as soon as it is made, under a key derived from its content, so a run that stops
half way is simply run again (it skips what is done) and a second run stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from backupd.binlog import index_store, layout
from backupd.binlog.archive import Archive, Timeline, clusters
from backupd.binlog.change_index import Indexer, IndexingError, IndexObject, Transaction
from backupd.binlog.fetch import load_segment
from backupd.errors import BackupdError, UsageError
from backupd.storage import ObjectStore


@dataclass
class BackfillReport:
    indexed: int = 0  # segments indexed
    present: int = 0  # segments that had one already
    failed: list[str] = field(default_factory=list)  # segments that could not be indexed
    timelines: list[str] = field(default_factory=list)  # "cluster/tl<id>" walked


def backfill(
    store: ObjectStore,
    cluster: str = "",
    timeline: int | None = None,
    progress: Callable[[str], None] = lambda _text: None,
) -> BackfillReport:
    """Index every unindexed segment of the chosen timelines (default: all of every
    cluster in the repository)."""
    names = [cluster] if cluster else clusters(store)
    if not names:
        raise UsageError("no binlog archive with timelines in this repository")
    report = BackfillReport()
    for name in names:
        view = Archive(store, name).read()
        chosen = [view.get(timeline)] if timeline else list(view.timelines.values())
        for found in sorted(chosen, key=lambda t: t.id):
            report.timelines.append(f"{name}/tl{found.id}")
            _timeline(store, found, report, progress)
    return report


def _timeline(
    store: ObjectStore, timeline: Timeline, report: BackfillReport, progress: Callable[[str], None]
) -> None:
    indexes = timeline.indexes  # listed with the archive: no LIST of its own
    for name, chain in sorted(
        timeline.files().items(), key=lambda item: layout.file_order(item[0])
    ):
        parts = [seg for seg in chain.segments if seg.size > 0]
        missing = index_store.unindexed(parts, indexes)
        report.present += len(parts) - len(missing)
        if not missing:
            continue
        progress(f"{timeline.stream}/{name}: indexing {len(missing)} segment(s)")
        try:
            report.indexed += _file(store, parts, set(missing))
        except (BackupdError, IndexingError) as exc:
            text = exc.message if isinstance(exc, BackupdError) else str(exc)
            report.failed.append(f"{timeline.stream}/{name}: {text}")


def _file(
    store: ObjectStore, parts: list[layout.SegmentKey], missing: set[layout.SegmentKey]
) -> int:
    """Read the file's segments in order up to the last unindexed one; store one index
    object per run of consecutive unindexed segments. Returns the segments indexed."""
    indexer = Indexer()
    last = max(parts.index(seg) for seg in missing)
    run: list[layout.SegmentKey] = []
    transactions: list[Transaction] = []
    for seg in parts[: last + 1]:
        found = indexer.index(seg.extent, load_segment(store, seg))
        if seg in missing:
            run.append(seg)
            transactions += found
        elif run:
            _store(store, run, transactions)
            run, transactions = [], []
    if run:
        _store(store, run, transactions)
    return len(missing)


def _store(
    store: ObjectStore, run: list[layout.SegmentKey], transactions: list[Transaction]
) -> None:
    obj = IndexObject(run[0].file, run[0].start, run[-1].end, transactions)
    index_store.store_index(store, run[0].stream, obj)
