"""Archived binlogs go with the snapshot sets that needed them, never earlier.

A binlog file is deletable only when it lies entirely before the coordinate of the oldest
snapshot set still kept on its timeline's stream: no restore can start before that set.
A stream without any kept set that names a coordinate loses nothing. Pure planning, then a
small apply.

Prune calls this only on a complete listing: a manifest key whose body cannot be read still
names a set whose start is unknown, so its presence stops every deletion (snapshot/prune.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from backupd.binlog import archive, layout
from backupd.errors import ArchiveCorrupt, StorageError
from backupd.snapshot.catalog import SnapshotSet
from backupd.storage import ObjectStore


@dataclass(frozen=True, order=True)
class ArchivedFile:
    stream: str  # the timeline's key home (a legacy server identity, or <cluster>/tl<id>)
    file: str


def coordinate_file(record: SnapshotSet) -> str:
    file, _, pos = record.coordinate.rpartition(":")
    return file if file and pos.isdigit() else ""


def deletable(
    kept: Iterable[SnapshotSet],
    archived: Iterable[ArchivedFile],
    stream_of: Callable[[SnapshotSet], str] | None = None,
    crossings: dict[str, list[str]] | None = None,
) -> list[ArchivedFile]:
    """Archived files older than the file of every kept set on their stream (`stream_of`
    says which stream a set was taken on; by default its server identity), and older than
    every file where a plan from a kept set on an ancestor enters the stream (`crossings`).

    A kept set that names no server while several streams are archived could belong to any
    of them: then nothing is deletable (fail closed)."""
    files = sorted(set(archived))
    streams = {f.stream for f in files}
    kept = list(kept)
    where = stream_of or (lambda record: record.server_identity)
    if len(streams) > 1 and any(coordinate_file(r) and not r.server_identity for r in kept):
        return []
    out = []
    for stream in sorted(streams):
        alone = len(streams) == 1
        starts = [
            name
            for record in kept
            if (name := coordinate_file(record))
            and (where(record) == stream or (alone and not record.server_identity))
        ] + (crossings or {}).get(stream, [])
        if not starts:
            continue
        oldest = min(starts, key=layout.file_order)
        base, number = layout.file_order(oldest)
        out += [
            f
            for f in files
            if f.stream == stream
            and layout.file_order(f.file)[0] == base
            and layout.file_order(f.file)[1] < number
        ]
    return out


@dataclass(frozen=True)
class ArchiveListing:
    """What LIST found under `binlog/`: the archived files, and keys the layout cannot name
    (a stranger may belong to a newer layout or a damaged upload: prune must not guess)."""

    files: list[ArchivedFile]
    strangers: list[str]
    clusters: list[str]  # those with timeline history objects


def list_archive(store: ObjectStore) -> ArchiveListing:
    """One LIST of the archive; a failing LIST raises StorageError (no partial answer)."""
    found = set()
    strangers = []
    clusters = set()
    for info in store.list(f"{layout.ROOT}/"):
        if history := layout.parse_history(info.key):
            clusters.add(history[0])
            continue
        if layout.parse_gap(info.key) is not None:
            continue
        if index := layout.parse_index(info.key):  # goes with its file's segments
            found.add(ArchivedFile(index.stream, index.file))
            continue
        split = layout.split_stream(info.key)
        if (
            split is not None
            and len(split[1]) == 2
            and (split[1][1] == "manifest.json" or layout.parse_segment(info.key) is not None)
        ):
            found.add(ArchivedFile(split[0], split[1][0]))
        else:
            strangers.append(info.key)
    return ArchiveListing(sorted(found), strangers, sorted(clusters))


@dataclass(frozen=True)
class TimelineMap:
    """Every cluster's timelines, read once per prune: which stream a set was taken on, and
    where plans from kept sets enter later timelines."""

    views: list[archive.ArchiveView]

    @classmethod
    def read(cls, store: ObjectStore, clusters: Iterable[str]) -> TimelineMap:
        """ArchiveCorrupt when a history object is unreadable: which stream a set needs is
        then unknowable, so nothing may be deleted (fail closed)."""
        views = [archive.Archive(store, cluster).read() for cluster in clusters]
        broken = [problem for view in views for problem in view.broken]
        if broken:
            raise ArchiveCorrupt(
                f"binlog retention refused, nothing deleted: unreadable timeline history "
                f"{broken[0]}"
            )
        return cls(views)

    def stream_of(self, record: SnapshotSet) -> str:
        """The timeline its server was writing when the set was taken (as recorded, else by
        identity and lock time), or its server identity in an archive from before them."""
        for view in self.views:
            recorded = (
                view.timelines.get(record.timeline) if record.cluster == view.cluster else None
            )
            if recorded is not None:
                return recorded.stream
        at = record.locked_at or record.started_at
        for view in self.views:
            found = view.of_identity(record.server_identity, at)
            if found is not None:
                return found.stream
        return record.server_identity

    def crossings(self, kept: Iterable[SnapshotSet]) -> dict[str, list[str]]:
        """Stream -> the files where plans from kept sets on an ancestor timeline enter it
        (its `child_start`): a kept set needs those as much as its own timeline's files."""
        streams_with_sets = {self.stream_of(record) for record in kept if coordinate_file(record)}
        needed: dict[str, list[str]] = {}
        for view in self.views:
            for timeline in view.timelines.values():
                history = timeline.history
                if not history.crossable:
                    continue
                if any(a.stream in streams_with_sets for a in view.lineage(timeline.id)[:-1]):
                    needed.setdefault(timeline.stream, []).append(
                        history.child_start.rpartition(":")[0]
                    )
        return needed


def delete_files(store: ObjectStore, victims: list[ArchivedFile]) -> list[str]:
    """Delete every object of each file (segments and their change indexes first, the
    manifest last); return errors."""
    errors = []
    for victim in victims:
        keys = [info.key for info in store.list(layout.file_prefix(victim.stream, victim.file))]
        keys.sort(key=lambda k: k.endswith("manifest.json"))
        for key in keys:
            try:
                store.delete(key)
            except StorageError as exc:  # report it and go on with the next file
                errors.append(f"binlog {victim.stream}/{victim.file}: {exc.message}")
                break
    return errors
