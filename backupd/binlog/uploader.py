"""Upload spooled segments: a small worker pool over a bounded queue, retried with backoff.

Each segment is compressed (zstd, configurable level), hashed (sha256 of the raw bytes and
of the object, both in the key), stored, and only then removed from the spool. Keys are
derived from content, so uploading the same segment twice (a kill between upload and
removal) writes the same object again: no duplicate.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from backupd.binlog import layout
from backupd.binlog.extent import Extent
from backupd.binlog.spool import SpoolEntry
from backupd.errors import BackupdError
from backupd.log import get_logger
from backupd.storage import ObjectStore

_log = get_logger("binlog.uploader")

BACKOFF_START = 0.2
BACKOFF_MAX = 10.0


@dataclass(frozen=True)
class Encoded:
    key: layout.SegmentKey
    body: bytes


def encode(stream: str, extent: Extent, raw: bytes, compression: str, level: int) -> Encoded:
    """The object for a segment and its key (pure but for the compressor)."""
    if len(raw) != extent.size:
        raise ValueError(f"{extent.file} {extent.start}..{extent.end}: got {len(raw)} bytes")
    if compression == "zstd":
        body = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)
        ext = "zst"
    else:
        body, ext = raw, "bin"
    key = layout.SegmentKey(
        stream, extent, hashlib.sha256(raw).hexdigest(), hashlib.sha256(body).hexdigest(), ext
    )
    return Encoded(key, body)


@dataclass
class Target:
    """Where and how segments are stored: the repository (read at use, so a reload applies),
    the timeline's stream in keys (switched only while nothing is spooled), and the
    compression."""

    store: Callable[[], ObjectStore]
    stream: str
    compression: str
    level: int

    def encode(self, entry: SpoolEntry, raw: bytes) -> Encoded:
        return encode(self.stream, entry.extent, raw, self.compression, self.level)


class Uploader:
    """Workers take spool entries, upload them, and report each one done."""

    def __init__(
        self,
        target: Target,
        on_done: Callable[[SpoolEntry, layout.SegmentKey, int], None],
        on_error: Callable[[str], None],
        stop: threading.Event,
        workers: int = 2,
        capacity: int = 4096,
    ) -> None:
        self.target = target
        self._on_done = on_done
        self._on_error = on_error
        self._stop = stop
        self._queue: queue.Queue[SpoolEntry] = queue.Queue(capacity)
        self._threads = [
            threading.Thread(target=self._work, name=f"binlog-upload-{n}", daemon=True)
            for n in range(workers)
        ]
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def backlog(self) -> int:
        """Segments waiting for or in upload."""
        return self._queue.qsize() + self._busy

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def submit(self, entry: SpoolEntry) -> bool:
        """Queue `entry`; waits while the queue is full; False when stopping."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                entry = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                self._busy += 1
            try:
                self._upload(entry)
            except Exception:  # a bug in bookkeeping must not take the worker down with it
                _log.exception("segment upload bookkeeping failed", segment=entry.path.name)
            finally:
                with self._lock:
                    self._busy -= 1

    def _upload(self, entry: SpoolEntry) -> None:
        delay = BACKOFF_START
        while not self._stop.is_set():
            try:
                encoded = self.target.encode(entry, entry.read())
                self.target.store().put(encoded.key.key, encoded.body)
            except (BackupdError, OSError) as exc:
                message = getattr(exc, "message", str(exc))
                _log.warning(
                    "segment upload failed; retrying",
                    segment=entry.path.name,
                    error=message,
                    retry_in=delay,
                )
                self._on_error(message)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._on_done(entry, encoded.key, len(encoded.body))
            return
