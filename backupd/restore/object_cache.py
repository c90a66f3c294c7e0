"""Verified binlog segments on local disk, shared by `restore plan`, `restore replay` and `drill`.

An entry holds one archived object's raw (decompressed) bytes under the object's sha256, so
a second command downloads nothing already fetched, and an object replaced by compaction is
simply another entry. Nothing unverified ever carries an entry's name: an object is streamed
from the store (a compacted binlog file never sits whole in memory), decompressed in chunks
into a private temporary file while the object's and the raw bytes' sha256 are computed,
and renamed into place only when both, and the size, match the key (two processes fetching
the same object both write the same bytes; the last rename wins). An entry is hashed again
whenever it is read (`copy_into`), so disk corruption or a tampered entry is noticed and the
object fetched again. Directories are 0700, files 0600:
entries hold every row change the binlogs carried (see backupd/private.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from backupd.binlog import layout
from backupd.durable import TMP_PREFIX, fsync_dir
from backupd.errors import ArchiveCorrupt
from backupd.private import FILE_MODE, private_dir
from backupd.storage import ObjectStore
from backupd.storage.streaming import open_object

CHUNK = 1 << 20
STALE_TMP_SECONDS = 3600.0  # a temporary file this old belongs to a killed fetch


@dataclass(frozen=True)
class Usage:
    entries: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"entries": self.entries, "bytes": self.bytes}


class ObjectCache:
    """Entries under `root/objects/<sha[:2]>/<sha>`; `max_bytes` (0: no bound) for `trim`."""

    def __init__(self, root: Path, max_bytes: int = 0) -> None:
        self.root = root
        self.objects = root / "objects"
        self.max_bytes = max_bytes

    def path(self, seg: layout.SegmentKey) -> Path:
        sha = seg.object_sha256
        return self.objects / sha[:2] / sha

    def has(self, seg: layout.SegmentKey) -> bool:
        return self.path(seg).is_file()

    def fill(self, store: ObjectStore, seg: layout.SegmentKey) -> int:
        """Download, verify and store one object; the raw bytes it holds."""
        final = self.path(seg)
        private_dir(final.parent)
        tmp = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{final.name}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            with open(fd, "wb") as out:
                with open_object(store, seg.key) as body:
                    _decode(seg, body, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(final.parent)
        return seg.size

    def copy_into(self, seg: layout.SegmentKey, out: BinaryIO) -> bool:
        """Append the entry to `out` if it is whole; False (entry removed) when it is not.

        On False, `out` may hold part of the entry: the caller truncates it back.
        """
        path = self.path(seg)
        try:
            with open(path, "rb") as entry:
                digest, size = _copy_hashed(entry, out, seg.size)
        except FileNotFoundError:
            return False
        if size != seg.size or digest != seg.raw_sha256:
            path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: the last to go in `trim`
        return True

    def usage(self) -> Usage:
        entries = self._entries()
        return Usage(len(entries), sum(size for _path, size, _used in entries))

    def trim(self, keep: set[Path] | None = None) -> Usage:
        """Remove least recently used entries (never those in `keep`) down to `max_bytes`,
        and temporary files left by killed fetches. Returns what was removed."""
        self._remove_stale_tmp()
        if not self.max_bytes:
            return Usage(0, 0)
        entries = sorted(self._entries(), key=lambda e: e[2])
        total = sum(size for _path, size, _used in entries)
        removed = Usage(0, 0)
        for path, size, _used in entries:
            if total <= self.max_bytes:
                break
            if keep and path in keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed = Usage(removed.entries + 1, removed.bytes + size)
        return removed

    def clear(self) -> Usage:
        """Remove every entry (other commands re-fetch what they need)."""
        entries = self._entries()
        for path, _size, _used in entries:
            path.unlink(missing_ok=True)
        self._remove_stale_tmp(max_age=0.0)
        return Usage(len(entries), sum(size for _path, size, _used in entries))

    def _entries(self) -> list[tuple[Path, int, float]]:
        found = []
        for path in self.objects.glob("*/*"):
            if path.name.startswith(TMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed by another command
                info = path.stat()
                found.append((path, info.st_size, info.st_mtime))
        return found

    def _remove_stale_tmp(self, max_age: float = STALE_TMP_SECONDS) -> None:
        now = time.time()
        for path in self.objects.glob(f"*/{TMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime >= max_age:
                    path.unlink()


class _Hashed:
    """Hashes what is read through it: the stored object's sha256, checked at the end."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _decode(seg: layout.SegmentKey, body: BinaryIO, out: BinaryIO) -> None:
    """Stream the object into `out`, decompressing on the way; raise ArchiveCorrupt unless
    both the object's and the raw bytes' sha256 (and size) match the key."""
    hashed = _Hashed(body)
    source: Any = hashed
    if seg.ext == "zst":
        source = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, hashed),  # it only calls read()
            read_across_frames=True,
            closefd=False,
        )
    try:
        raw_sha, size = _copy_hashed(source, out, seg.size)
    except zstandard.ZstdError:
        raw_sha, size = "", -1  # undecodable: the object's sha256 below names it
    hashed.drain()
    if hashed.digest.hexdigest() != seg.object_sha256:
        raise ArchiveCorrupt(f"object sha256 mismatch: {seg.key}")
    if size != seg.size or raw_sha != seg.raw_sha256:
        raise ArchiveCorrupt(f"raw sha256 or size mismatch: {seg.key}")


def _copy_hashed(source: Any, out: BinaryIO, limit: int) -> tuple[str, int]:
    """Copy at most `limit + 1` bytes (enough to see an oversized entry); their sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    while size <= limit and (chunk := source.read(min(CHUNK, limit + 1 - size))):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
