"""Archived binlogs go with the snapshot sets that needed them, never earlier.

A binlog file is deletable only when it lies entirely before the coordinate of the oldest
snapshot set still kept for its server: no restore can start before that set. Without any
kept set that names a coordinate nothing is deleted. Pure planning, then a small apply.

Prune calls this only on a complete listing: a manifest key whose body cannot be read still
names a set whose start is unknown, so its presence stops every deletion (snapshot/prune.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from backupd.binlog import layout
from backupd.errors import StorageError
from backupd.snapshot.catalog import SnapshotSet
from backupd.storage import ObjectStore


@dataclass(frozen=True, order=True)
class ArchivedFile:
    server: str
    file: str


def coordinate_file(record: SnapshotSet) -> str:
    file, _, pos = record.coordinate.rpartition(":")
    return file if file and pos.isdigit() else ""


def deletable(kept: Iterable[SnapshotSet], archived: Iterable[ArchivedFile]) -> list[ArchivedFile]:
    """Archived files older than the file of every kept set of their server.

    A kept set that names no server while several are archived could belong to any of them:
    then nothing is deletable (fail closed)."""
    files = sorted(set(archived))
    servers = {f.server for f in files}
    kept = list(kept)
    if len(servers) > 1 and any(coordinate_file(r) and not r.server_identity for r in kept):
        return []
    out = []
    for server in sorted(servers):
        alone = len(servers) == 1
        starts = [
            name
            for record in kept
            if (name := coordinate_file(record))
            and (record.server_identity == server or (alone and not record.server_identity))
        ]
        if not starts:
            continue
        oldest = min(starts, key=layout.file_order)
        base, number = layout.file_order(oldest)
        out += [
            f
            for f in files
            if f.server == server
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


def list_archive(store: ObjectStore) -> ArchiveListing:
    """One LIST of the archive; a failing LIST raises StorageError (no partial answer)."""
    found = set()
    strangers = []
    for info in store.list(f"{layout.ROOT}/"):
        parts = info.key.split("/")
        if layout.parse_gap(info.key) is not None:
            continue
        if len(parts) == 4 and (
            parts[3] == "manifest.json" or layout.parse_segment(info.key) is not None
        ):
            found.add(ArchivedFile(parts[1], parts[2]))
        else:
            strangers.append(info.key)
    return ArchiveListing(sorted(found), strangers)


def delete_files(store: ObjectStore, victims: list[ArchivedFile]) -> list[str]:
    """Delete every object of each file (segments first, the manifest last); return errors."""
    errors = []
    for victim in victims:
        keys = [info.key for info in store.list(layout.file_prefix(victim.server, victim.file))]
        keys.sort(key=lambda k: k.endswith("manifest.json"))
        for key in keys:
            try:
                store.delete(key)
            except StorageError as exc:  # report it and go on with the next file
                errors.append(f"binlog {victim.server}/{victim.file}: {exc.message}")
                break
    return errors
