"""Binlog files for a restore: objects downloaded once, in parallel, into the shared cache.

`restore plan`, `restore replay` and `drill` each need the same archived files. The objects
a plan needs that the cache (backupd/restore/object_cache.py) lacks are downloaded by
`workers` threads at once (S3 serves parallel GETs far faster than one after another); then
each file is assembled from the cache into the command's run directory, every entry hashed
again on the way (one that no longer matches is fetched anew). When compaction replaced a
file's segments between the listing and the download, the file is listed again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from backupd.binlog import fetch, layout
from backupd.config import RestoreSection
from backupd.errors import ArchiveCorrupt, ObjectMissing
from backupd.restore.object_cache import ObjectCache
from backupd.restore.progress import Meter
from backupd.storage import ObjectStore

_ATTEMPTS = 3  # listings per file when compaction keeps replacing its segments


@dataclass
class Fetcher:
    cache: ObjectCache
    workers: int = 4
    on_progress: Callable[[Meter], None] | None = None
    downloads: int = field(default=0, init=False)  # objects fetched by this fetcher (tests)

    def files(
        self, store: ObjectStore, stream: str, chains: list[layout.FileChain], dest: Path
    ) -> list[Path]:
        """Each chain's file rebuilt from offset 0 under `dest`, in the order given."""
        for chain in chains:
            fetch.require_whole(chain)
        dest.mkdir(parents=True, exist_ok=True)
        for attempt in range(_ATTEMPTS):
            try:
                self.download(store, chains)
                paths = [self._assemble(store, chain, dest) for chain in chains]
            except ObjectMissing as exc:
                if attempt == _ATTEMPTS - 1:
                    raise
                chains = _listed_again(store, stream, chains, str(exc.fields.get("key", "")))
                continue
            self.cache.trim(keep={self.cache.path(s) for c in chains for s in c.segments})
            return paths
        raise AssertionError("unreachable")

    def download(self, store: ObjectStore, chains: list[layout.FileChain]) -> None:
        """Fetch what the cache lacks, `workers` at once, in replay order; the first error
        stops the rest."""
        wanted: dict[str, layout.SegmentKey] = {}
        for chain in chains:
            for seg in chain.segments:
                if seg.object_sha256 not in wanted and not self.cache.has(seg):
                    wanted[seg.object_sha256] = seg
        if not wanted:
            return
        meter = Meter("fetch", sum(seg.size for seg in wanted.values()))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fetch") as pool:
            pending = {pool.submit(self._fill, store, seg, meter) for seg in wanted.values()}
            done, _rest = wait(pending, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                for future in pending:
                    future.cancel()
                failed.result()  # raises
        self.downloads += meter.count
        meter.finished = True
        if self.on_progress is not None:
            self.on_progress(meter)

    def _fill(self, store: ObjectStore, seg: layout.SegmentKey, meter: Meter) -> None:
        meter.add(self.cache.fill(store, seg))
        if self.on_progress is not None:
            self.on_progress(meter)

    def _assemble(self, store: ObjectStore, chain: layout.FileChain, dest: Path) -> Path:
        target = dest / chain.file
        tmp = dest / f".{chain.file}.partial"
        try:
            with open(tmp, "wb") as out:
                for seg in chain.segments:
                    start = out.tell()
                    if self.cache.copy_into(seg, out):
                        continue
                    out.seek(start)  # the entry was damaged (and is gone): fetch it anew
                    out.truncate()
                    self.cache.fill(store, seg)
                    self.downloads += 1
                    if not self.cache.copy_into(seg, out):
                        raise ArchiveCorrupt(f"cached copy of {seg.key} fails its checksum")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def _listed_again(
    store: ObjectStore, stream: str, chains: list[layout.FileChain], missing_key: str
) -> list[layout.FileChain]:
    """The chains with the one holding `missing_key` (or all, when unknown) listed again."""
    fresh = []
    for chain in chains:
        if missing_key and all(seg.key != missing_key for seg in chain.segments):
            fresh.append(chain)
            continue
        again = fetch.catalog(store, stream, chain.file).get(chain.file)
        if again is None:
            raise ObjectMissing(key=missing_key or chain.file)
        fetch.require_whole(again)
        fresh.append(again)
    return fresh


def fetcher_for(
    section: RestoreSection,
    work_dir: str | None = None,
    workers: int | None = None,
    on_progress: Callable[[Meter], None] | None = None,
) -> Fetcher:
    """The configured fetcher; `work_dir`/`workers` are the command line's overrides."""
    root = Path(work_dir or section.work_dir)
    return Fetcher(
        ObjectCache(root, section.cache_max_bytes), workers or section.fetch_workers, on_progress
    )
