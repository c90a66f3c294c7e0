"""Benchmark: fetching a restore's binlog objects from S3 with 1..N workers, cold and warm.

Synthetic binlog files are archived (segmented, zstd, as the daemon does) into moto through
a proxy that holds every GET for `--latency` seconds, standing in for S3's time to first
byte. Then the restore fetcher (backupd/restore/fetcher.py) rebuilds them into an empty
object cache once per worker count, and once more into the warm cache (what `restore
replay` does after `restore plan`): the time, the objects and MB downloaded, and the GETs
the proxy saw.

Prints one JSON document. Run: `.venv/bin/python -m bench.restore_fetch [--latency 0.05]
[--files 4] [--transactions 20000] [--workers 1 4 8]`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from backupd.binlog import fetch
from backupd.config import StorageSection
from backupd.restore.fetcher import Fetcher
from backupd.restore.object_cache import ObjectCache
from backupd.storage.s3store import S3Store
from tests.binlog_fakes import FakeFile, Txn
from tests.testbed.moto import FAKE_CREDENTIALS, MotoServer
from tests.testbed.proxy import DelayingProxy
from tests.unit.test_binlog_compact_fetch import archive

SEGMENT_BYTES = 256 * 1024


def archive_files(store: S3Store, base: Path, files: int, transactions: int) -> int:
    """Archive `files` synthetic binlog files, cut by size only; their total size in bytes."""
    total = 0
    for number in range(1, files + 1):
        fake = FakeFile(f"mysql-bin.{number:06d}")
        for n in range(transactions):
            fake.transaction(Txn([200 + n % 300, 120]))
        fake.rotate(f"mysql-bin.{number + 1:06d}")
        archive(base / f"a{number}", store, fake, SEGMENT_BYTES, flush_seconds=3600.0)
        total += len(fake.data)
    return total


def run(store: S3Store, proxy: DelayingProxy, cache: Path, run_dir: Path, workers: int) -> Any:
    chains = fetch.catalog(store, "1")
    ordered = [chains[name] for name in sorted(chains)]
    gets = proxy.requests["GetObject"]
    fetcher = Fetcher(ObjectCache(cache), workers)
    started = time.monotonic()
    fetcher.files(store, "1", ordered, run_dir)
    seconds = time.monotonic() - started
    return {
        "workers": workers,
        "seconds": round(seconds, 3),
        "objects_downloaded": fetcher.downloads,
        "get_requests": proxy.requests["GetObject"] - gets,
        "mb_per_second": round(sum(c.end for c in ordered) / seconds / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.restore_fetch", description=__doc__)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds held per GET")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--transactions", type=int, default=20000, help="per file")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args(argv)
    os.environ.update(FAKE_CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        base = Path(tmp)
        moto = MotoServer(base / "moto.log").start()
        proxy = DelayingProxy(moto.port, marker=b"GET /", delay=args.latency).start()
        try:
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(
                Bucket=bucket
            )
            section = StorageSection(
                url=f"s3://{bucket}/bench", endpoint_url=proxy.url, region="us-east-1"
            )
            store = S3Store(section)
            size = archive_files(store, base, args.files, args.transactions)
            cold = [
                run(store, proxy, base / f"cache{n}", base / f"run{n}", n) for n in args.workers
            ]
            last = args.workers[-1]
            warm = run(store, proxy, base / f"cache{last}", base / "warm", last)
        finally:
            proxy.stop()
            moto.stop()
    doc = {
        "latency_seconds": args.latency,
        "binlog_bytes": size,
        "objects": cold[0]["objects_downloaded"],
        "cold": cold,
        "warm": warm,
    }
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
