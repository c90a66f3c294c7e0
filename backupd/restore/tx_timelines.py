"""Where a named transaction (GTID or coordinate) is archived, timeline by timeline.

A name resolves only within the chosen timeline's history (`backupd.binlog.branches`): its
own files first, then its ancestors' (newest first) up to where the next timeline branched
off. When a name is found only elsewhere (on a branch a later timeline abandoned, or on
another branch altogether), undo, `--before` and `--skip` refuse it and say which
`--timeline` holds it, instead of acting on a transaction of another history.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from backupd.binlog import layout
from backupd.binlog.branches import Membership, membership
from backupd.errors import ArchiveCorrupt, ObjectMissing, TransactionOffTimeline
from backupd.restore.around import TxRef, matches
from backupd.restore.endpoint import Transaction, transactions
from backupd.restore.fetcher import Fetcher
from backupd.restore.plan import Position, gtid_state
from backupd.restore.repository import Repository, chain_of
from backupd.restore_target import GtidTarget
from backupd.storage import ObjectStore


@dataclass(frozen=True)
class Place:
    """One archived transaction with the name asked for, and how it relates to the history."""

    timeline: int
    path: Path  # its rebuilt binlog file
    tx: Transaction
    membership: Membership

    @property
    def member(self) -> bool:
        return self.membership.member is True


class Unusable(Exception):
    """A file that may hold the transaction could not be rebuilt (the message says why)."""


def places(
    store: ObjectStore, repo: Repository, ref: TxRef, workdir: Path, fetcher: Fetcher
) -> Iterator[Place]:
    """Every archived transaction named `ref`: on the chosen timeline, then its ancestors
    (newest first), then every other timeline of the cluster. Lazy: stop at the first
    member. Raises Unusable for a file that cannot be rebuilt."""
    for timeline, stream, chain in _candidates(repo, ref):
        directory = workdir / f"tl{timeline:06d}" / stream.replace("/", "_")
        try:
            path = fetcher.files(store, stream, [chain], directory)[0]
        except (ArchiveCorrupt, ObjectMissing) as exc:
            raise Unusable(f"archived object unusable: {exc.message}") from exc
        start = Position(path.name, 4)
        for tx in transactions([path], start):
            if matches(tx, ref):
                end = tx.end.position
                found = membership(repo.view, repo.timeline, timeline, end.file, end.pos,
                                   tx.end.gtid)  # fmt: skip
                yield Place(timeline, path, tx, found)


def refuse_off_timeline(
    store: ObjectStore,
    repo: Repository,
    refs: Sequence[TxRef],
    workdir: Path,
    fetcher: Fetcher,
) -> None:
    """Raise TransactionOffTimeline for the first of `refs` archived only outside the chosen
    timeline's history; nothing when each is in it or nowhere (the caller's error stands)."""
    for ref in refs:
        try:
            found = []
            for place in places(store, repo, ref, workdir, fetcher):
                if place.member:
                    break
                found.append(place)
            else:
                if found:
                    raise off_timeline(repo, ref, found)
        except Unusable:
            continue  # the caller's own error says more than a guess would


def off_timeline(repo: Repository, ref: TxRef, found: Sequence[Place]) -> TransactionOffTimeline:
    where = "; ".join(
        f"it is on timeline {p.timeline} at {p.tx.start} ({p.membership.why})" for p in found
    )
    choices = " or ".join(dict.fromkeys(f"--timeline {p.timeline}" for p in found))
    return TransactionOffTimeline(ref=str(ref), timeline=repo.timeline, where=where, choose=choices)


def _candidates(repo: Repository, ref: TxRef) -> Iterator[tuple[int, str, layout.FileChain]]:
    """(timeline, stream, whole file) that may hold `ref`, in search order."""
    view = repo.view
    if view is None:  # an archive from before timelines: one stream
        for file in _files(repo.keys.values(), ref):
            found = chain_of(repo, repo.stream, file)
            if found is not None:
                yield 0, repo.stream, found
        return
    lineage = [t.id for t in view.lineage(repo.timeline)]
    order = [*reversed(lineage), *sorted(set(view.timelines) - set(lineage), reverse=True)]
    for number in order:
        timeline = view.get(number)
        chains = timeline.files()
        for file in _files(timeline.segments, ref):
            if file in chains:
                yield number, timeline.stream, chains[file]


def _files(keys: Iterable[layout.SegmentKey], ref: TxRef) -> list[str]:
    return sorted({k.file for k in keys if _may_hold(k, ref)}, key=layout.file_order)


def _may_hold(key: layout.SegmentKey, ref: TxRef) -> bool:
    """From the segment's name alone: its file, or its GTID range."""
    if not isinstance(ref, GtidTarget):
        return key.file == ref.file
    if ref.uuid:  # MySQL segments record no GTIDs: the name alone cannot narrow the search
        return False
    first = gtid_state(key.first_gtid).get(ref.domain)
    last = gtid_state(key.last_gtid).get(ref.domain)
    return (
        last is not None
        and last.sequence >= ref.sequence
        and (first is None or first.sequence <= ref.sequence)
    )
