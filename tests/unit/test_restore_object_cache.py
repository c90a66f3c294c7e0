"""The restore object cache and parallel fetcher on a file:// repository with synthetic
segments: hit, miss, a damaged entry fetched anew, concurrent commands, bounds, privacy and
the terminal progress line."""

from __future__ import annotations

import io
import re
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.binlog import fetch, layout
from backupd.errors import ArchiveCorrupt
from backupd.restore.fetcher import Fetcher
from backupd.restore.object_cache import ObjectCache
from backupd.restore.progress import Meter, Terminal, wanted
from backupd.storage import ObjectInfo
from backupd.storage.filestore import FileStore
from tests.binlog_fakes import FakeFile, Txn
from tests.unit.test_binlog_compact_fetch import archive


class CountingStore:
    """A FileStore that counts GETs per key (what S3 would bill)."""

    def __init__(self, inner: FileStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.gets: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes:
        with self._lock:
            self.gets[key] += 1
        return self.inner.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def check(self) -> None:
        self.inner.check()


@pytest.fixture
def archived(tmp_path: Path) -> tuple[CountingStore, list[FakeFile]]:
    """Two binlog files archived as many small zstd segments."""
    store = FileStore(tmp_path / "repo")
    files = []
    for number in (1, 2):
        fake = FakeFile(f"mysql-bin.00000{number}")
        for n in range(12):
            fake.transaction(Txn([40 + n + 13 * number]))
        fake.rotate(f"mysql-bin.00000{number + 1}")
        archive(tmp_path / f"a{number}", store, fake)
        files.append(fake)
    return CountingStore(store), files


def chains(store: CountingStore) -> list[layout.FileChain]:
    found = fetch.catalog(store, "1")
    return [found[name] for name in sorted(found)]


def segments(store: CountingStore) -> list[layout.SegmentKey]:
    return [seg for chain in chains(store) for seg in chain.segments]


def test_objects_stream_from_stores_that_can(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]]
) -> None:
    store, files = archived
    assert hasattr(store.inner, "reader") and not hasattr(store, "reader")
    paths = Fetcher(ObjectCache(tmp_path / "work")).files(
        store.inner, "1", chains(store), tmp_path / "run"
    )
    assert [p.read_bytes() for p in paths] == [f.data for f in files]


def test_a_second_command_downloads_nothing(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]]
) -> None:
    store, files = archived
    first = Fetcher(ObjectCache(tmp_path / "work"), workers=4)
    paths = first.files(store, "1", chains(store), tmp_path / "run1")
    assert [p.read_bytes() for p in paths] == [f.data for f in files]
    objects = {seg.object_sha256 for seg in segments(store)}  # equal headers: one object
    assert len(objects) > 4 and sum(store.gets.values()) == len(objects)
    assert max(store.gets.values()) == 1 and first.downloads == len(objects)

    second = Fetcher(ObjectCache(tmp_path / "work"), workers=4)  # the next command
    again = second.files(store, "1", chains(store), tmp_path / "run2")
    assert [p.read_bytes() for p in again] == [f.data for f in files]
    assert second.downloads == 0 and sum(store.gets.values()) == len(objects)


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_a_damaged_entry_is_fetched_again(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]], damage: str
) -> None:
    store, files = archived
    cache = ObjectCache(tmp_path / "work")
    Fetcher(cache).files(store, "1", chains(store), tmp_path / "run1")
    victim = segments(store)[3]
    entry = cache.path(victim)
    body = entry.read_bytes()
    changed = {
        "flip": body[:-1] + bytes([body[-1] ^ 1]),
        "truncate": body[: len(body) // 2],
        "extend": body + b"x",
    }[damage]
    entry.write_bytes(changed)
    store.gets.clear()
    fetcher = Fetcher(cache)
    paths = fetcher.files(store, "1", chains(store), tmp_path / "run2")
    assert [p.read_bytes() for p in paths] == [f.data for f in files]
    assert dict(store.gets) == {victim.key: 1} and fetcher.downloads == 1
    assert entry.read_bytes() == body


@pytest.mark.parametrize("streamed", [True, False])
@pytest.mark.parametrize("where", [0, -1])
def test_a_corrupt_object_is_never_cached(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]], streamed: bool, where: int
) -> None:
    """Damage at the start (zstd cannot decode it) or the end (the last byte of the frame);
    through `reader` (FileStore, S3) or `get` (any other store)."""
    store, _files = archived
    victim = segments(store)[2]
    path = store.inner.root / victim.key
    body = bytearray(path.read_bytes())
    body[where] ^= 0xFF
    path.write_bytes(body)
    cache = ObjectCache(tmp_path / "work")
    source: Any = store.inner if streamed else store
    with pytest.raises(ArchiveCorrupt, match=f"object sha256 mismatch: {re.escape(victim.key)}"):
        Fetcher(cache, workers=3).files(source, "1", chains(store), tmp_path / "run")
    assert not cache.has(victim)
    assert not list((tmp_path / "run").glob("mysql-bin.*"))  # no half-built file either
    assert not [p for p in cache.objects.glob("*/*") if p.name.startswith(".tmp-")]


def test_concurrent_commands_share_the_cache(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]]
) -> None:
    store, files = archived
    results: dict[int, list[bytes]] = {}

    def command(number: int) -> None:
        fetcher = Fetcher(ObjectCache(tmp_path / "work"), workers=3)
        paths = fetcher.files(store, "1", chains(store), tmp_path / f"run{number}")
        results[number] = [p.read_bytes() for p in paths]

    threads = [threading.Thread(target=command, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [f.data for f in files] for n in range(4)}
    cache = ObjectCache(tmp_path / "work")
    assert cache.usage().entries == len({s.object_sha256 for s in segments(store)})
    assert not [p for p in cache.objects.glob("*/*") if p.name.startswith(".tmp-")]


def test_entries_are_private(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]]
) -> None:
    store, _files = archived
    cache = ObjectCache(tmp_path / "work")
    Fetcher(cache).download(store, chains(store))
    entry = cache.path(segments(store)[0])
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.objects.stat().st_mode) == 0o700


def test_trim_keeps_what_the_command_needs_and_clear_empties(
    tmp_path: Path, archived: tuple[CountingStore, list[FakeFile]]
) -> None:
    store, _files = archived
    all_chains = chains(store)
    cache = ObjectCache(tmp_path / "work", max_bytes=1)
    Fetcher(cache).files(store, "1", all_chains[:1], tmp_path / "run1")
    first = cache.usage()
    assert first.entries == len(all_chains[0].segments)  # over the bound, but all needed
    Fetcher(cache).files(store, "1", all_chains[1:], tmp_path / "run2")
    assert cache.usage().entries == len(all_chains[1].segments)  # the first file's went
    assert all(cache.has(seg) for seg in all_chains[1].segments)
    cleared = cache.clear()
    assert cleared.entries == len(all_chains[1].segments) and cleared.bytes > 0
    assert cache.usage().entries == 0


def test_progress_only_on_a_terminal_without_json() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    assert wanted(False, tty) and not wanted(True, tty) and not wanted(False, pipe)
    terminal = Terminal(True, tty, interval=3600.0)
    show = terminal.follow("fetch")
    meter = Meter("fetch", 4_000_000)
    meter.add(1_000_000)
    show(meter)
    meter.add(1_000_000)
    show(meter)  # within the interval: not printed
    meter.add(2_000_000)
    meter.finished = True
    show(meter)
    lines = tty.getvalue()
    assert lines.startswith("\rfetch: 1 objects, 1.0/4.0 MB")
    assert "fetch: 2 objects" not in lines
    assert "\rfetch: 3 objects, 4.0/4.0 MB" in lines and "ETA 0s" in lines
    assert lines.endswith("\n")
    silent = Terminal(False, pipe)
    silent.follow("fetch")(meter)
    silent.finish()
    assert pipe.getvalue() == ""
