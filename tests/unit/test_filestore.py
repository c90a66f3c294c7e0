"""The file:// repository's listing while another thread deletes (compaction, roll-up)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.storage.filestore import FileStore


def test_an_object_deleted_during_a_listing_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory is scanned, then each entry stat'ed: an object deleted in between is
    gone, not an error (it raised FileNotFoundError to the reader)."""
    store = FileStore(tmp_path)
    for name in ("a", "b", "c"):
        store.put(f"binlog/f/{name}", b"x")
    real_scandir = os.scandir

    def scan_then_delete(path: Any) -> Iterator[os.DirEntry[str]]:
        entries = list(real_scandir(path))
        if str(path).endswith("/f"):
            store.delete("binlog/f/b")  # after the scan, before the stat
        return iter(entries)

    monkeypatch.setattr(os, "scandir", scan_then_delete)  # filestore calls os.scandir
    assert [info.key for info in store.list("binlog/")] == ["binlog/f/a", "binlog/f/c"]
