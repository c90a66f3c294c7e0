"""The bytes of recently uploaded segments, kept in memory for compaction.

Compaction joins a closed file's segments into one object; without this it would download
every segment it uploaded seconds earlier (a GET each, and the transfer). The uploader's
caller keeps each stored segment's raw bytes here, keyed by their sha256, up to a bound;
compaction takes what is here and downloads only what was evicted (or lost in a restart).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class RecentSegments:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def keep(self, raw_sha256: str, raw: bytes) -> None:
        """Remember a stored segment's bytes; the oldest go when over the bound."""
        if len(raw) > self.max_bytes:
            return
        with self._lock:
            if raw_sha256 in self._items:
                return
            self._items[raw_sha256] = raw
            self._bytes += len(raw)
            while self._bytes > self.max_bytes:
                _key, old = self._items.popitem(last=False)
                self._bytes -= len(old)

    def take(self, raw_sha256: str) -> bytes | None:
        """The bytes (checked against their sha256) and forget them; None when not kept."""
        with self._lock:
            raw = self._items.pop(raw_sha256, None)
            if raw is not None:
                self._bytes -= len(raw)
        if raw is None or hashlib.sha256(raw).hexdigest() != raw_sha256:
            return None
        return raw

    @property
    def size(self) -> int:
        with self._lock:
            return self._bytes
