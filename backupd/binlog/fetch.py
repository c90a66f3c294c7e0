"""Rebuild binlog files from the repository, without a daemon, verifying every checksum.

Each object's sha256 is checked before it is decompressed and the raw bytes' sha256 after;
the segments of a file must join without a hole from offset 0. A file is written under a
temporary name and renamed only when complete, so DEST never holds a half-verified file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import zstandard

from backupd.binlog import layout
from backupd.errors import ArchiveCorrupt, ObjectMissing
from backupd.storage import ObjectStore

_MAX_SEGMENT = 1 << 31


@dataclass(frozen=True)
class FetchedFile:
    file: str
    size: int
    closed: bool
    segments: int
    sha256: str


def load_segment(store: ObjectStore, seg: layout.SegmentKey) -> bytes:
    """One segment's raw bytes, both checksums verified."""
    body = store.get(seg.key)
    if hashlib.sha256(body).hexdigest() != seg.object_sha256:
        raise ArchiveCorrupt(f"object sha256 mismatch: {seg.key}")
    if seg.ext == "zst":
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=_MAX_SEGMENT)
    else:
        raw = body
    if len(raw) != seg.size or hashlib.sha256(raw).hexdigest() != seg.raw_sha256:
        raise ArchiveCorrupt(f"raw sha256 or size mismatch: {seg.key}")
    return raw


def catalog(store: ObjectStore, stream: str, file: str = "") -> dict[str, layout.FileChain]:
    """Each archived file's chain in one timeline's stream (one file's when `file` is given)."""
    prefix = layout.file_prefix(stream, file) if file else layout.stream_prefix(stream)
    segments = [
        seg for info in store.list(prefix) if (seg := layout.parse_segment(info.key)) is not None
    ]
    chains = {}
    for name, parts in layout.group_by_file(segments).items():
        found = layout.chain(parts)
        if found is not None:
            chains[name] = found
    return chains


def gaps(store: ObjectStore, stream: str) -> list[layout.GapKey]:
    prefix = f"{layout.stream_prefix(stream)}gaps/"
    return [g for info in store.list(prefix) if (g := layout.parse_gap(info.key)) is not None]


def fetch(
    store: ObjectStore,
    dest: Path,
    stream: str,
    first: str | None = None,
    last: str | None = None,
) -> list[FetchedFile]:
    chains = catalog(store, stream)
    order = sorted(chains, key=layout.file_order)
    if first:
        order = [f for f in order if layout.file_order(f) >= layout.file_order(first)]
    if last:
        order = [f for f in order if layout.file_order(f) <= layout.file_order(last)]
    dest.mkdir(parents=True, exist_ok=True)
    return [rebuild_file(store, stream, chains[file], dest) for file in order]


def rebuild_file(
    store: ObjectStore, stream: str, found: layout.FileChain, dest: Path
) -> FetchedFile:
    """Rebuild one file; when compaction replaced its segments meanwhile, list it again."""
    for _attempt in range(3):
        try:
            return rebuild(store, found, dest)
        except ObjectMissing:
            again = catalog(store, stream, found.file).get(found.file)
            if again is None:
                raise
            found = again
    return rebuild(store, found, dest)


def require_whole(chain: layout.FileChain) -> None:
    """A file is rebuilt only from offset 0 and without a hole."""
    if chain.holes:
        start, end = chain.holes[0]
        raise ArchiveCorrupt(f"{chain.file}: bytes {start}..{end} are missing from the archive")
    if not chain.segments:
        raise ArchiveCorrupt(f"{chain.file}: no segment starts at offset 0")


def rebuild(store: ObjectStore, chain: layout.FileChain, dest: Path) -> FetchedFile:
    require_whole(chain)
    digest = hashlib.sha256()
    target = dest / chain.file
    tmp = dest / f".{chain.file}.partial"
    try:
        with open(tmp, "wb") as handle:
            for seg in chain.segments:
                raw = load_segment(store, seg)
                digest.update(raw)
                handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return FetchedFile(chain.file, chain.end, chain.closed, len(chain.segments), digest.hexdigest())
