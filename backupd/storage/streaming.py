"""Reading an object as a stream, so a large one (a compacted binlog file) never sits in memory.

Stores that can (S3: the response body; file://: the file) offer `reader(key)`, a context
manager yielding something to `read(n)` from; any other store (a test's fake) falls back to
`get`. Errors are the store's own: ObjectMissing when absent, StorageError otherwise.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import BinaryIO

from backupd.storage.base import ObjectStore


@contextlib.contextmanager
def open_object(store: ObjectStore, key: str) -> Iterator[BinaryIO]:
    reader = getattr(store, "reader", None)
    if reader is None:
        yield io.BytesIO(store.get(key))
        return
    with reader(key) as body:
        yield body
