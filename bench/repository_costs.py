"""Benchmark: S3 requests and stored bytes of the binlog archive, counted through a proxy.

For each `flush_seconds` given: a fresh daemon archives into moto through the counting proxy
(tests/testbed/proxy.py); a writer commits one small row every 10 ms for `--load` seconds;
then the binlog is rotated, so the closed file is compacted (its segments fetched, one object
stored, the segments deleted), and the requests of that compaction are counted apart; with the
first value the server is then left idle for `--idle` seconds. Stored bytes are those of the
compacted objects (zstd, what stays in the bucket) per GB of the binlog files they hold.

Prints one JSON document. Run as root: `.venv/bin/python -m bench.repository_costs
[--flush 1 5 30] [--load 60] [--idle 120]`. docs/costs.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.testbed.bed import BUCKET, LocalBed
from tests.testbed.costs import measure
from tests.testbed.daemon import DaemonProcess, NotifyListener, render_toml
from tests.testbed.demo import wait_archived
from tests.testbed.proxy import DelayingProxy

GB = 1024**3


def archived(bed: LocalBed, sock: list[str]) -> None:
    head = bed.db.sql("SHOW MASTER STATUS")[0]
    wait_archived(sock, f"{head[0]}:{head[1]}", timeout=300)


def compacted(bed: LocalBed, prefix: str, file: str, timeout: float = 120) -> None:
    """Until `file` is one object and its manifest, its segments deleted (no event to await:
    poll the bucket)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = bed.s3().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/binlog/")
        keys = [o["Key"] for o in listed.get("Contents", []) if file in o["Key"]]
        if len(keys) == 2 and any("manifest" in key for key in keys):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{file} was not compacted")


def compacted_sizes(bed: LocalBed, prefix: str) -> tuple[int, int]:
    """(binlog bytes, stored object bytes) of every compacted file, from their manifests."""
    s3 = bed.s3()
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/binlog/").get("Contents", [])
    sizes = {o["Key"]: int(o["Size"]) for o in listed}
    raw = stored = 0
    for key in sizes:
        if key.endswith("manifest.json"):
            manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            raw += int(manifest["size"])
            stored += sizes[f"{prefix}/{manifest['object']}"]
    return raw, stored


def run(
    bed: LocalBed, proxy: DelayingProxy, flush: float, args: argparse.Namespace
) -> dict[str, Any]:
    base = bed.base / f"flush-{flush:g}"
    prefix = f"costs-{flush:g}"
    config = bed.config()
    config["daemon"] |= {
        "socket": str(base / "control.sock"),
        "state_dir": str(base / "state"),
        "spool_dir": str(base / "spool"),
    }
    config["storage"] |= {"url": f"s3://{BUCKET}/{prefix}", "endpoint_url": proxy.url}
    config["snapshot"]["enabled"] = False
    config["binlog"] = {"flush_seconds": flush}
    base.mkdir(parents=True)
    path = base / "backupd.toml"
    path.write_text(render_toml(config))
    notify = NotifyListener(base / "notify.sock")
    daemon = DaemonProcess(path, base / "backupd.log", notify)
    sock = ["--socket", str(base / "control.sock")]
    try:
        bed.db.sql("FLUSH BINARY LOGS")
        daemon.start()
        archived(bed, sock)
        load = measure(proxy, bed.db, args.load, table="costs.w", interval=0.01)
        archived(bed, sock)
        closing = str(bed.db.sql("SHOW MASTER STATUS")[0][0])
        before = dict(proxy.requests)
        started = time.monotonic()
        bed.db.sql("FLUSH BINARY LOGS")
        compacted(bed, prefix, closing)
        compaction = {
            op: n - before.get(op, 0) for op, n in proxy.requests.items() if n - before.get(op, 0)
        }
        raw, stored = compacted_sizes(bed, prefix)
        result: dict[str, Any] = {
            "flush_seconds": flush,
            "load": load.to_dict(),
            "compaction": {"seconds": round(time.monotonic() - started, 1), "requests": compaction},
            "compacted_files_bytes": raw,
            "stored_bytes": stored,
            "stored_bytes_per_gb_of_binlog": round(stored * GB / max(raw, 1)),
        }
        if args.idle and flush == args.flush[0]:
            result["idle"] = measure(proxy, bed.db, args.idle).to_dict()
        return result
    finally:
        daemon.stop()
        notify.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flush", type=float, nargs="+", default=[1.0, 5.0, 30.0])
    parser.add_argument("--load", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=120.0)
    args = parser.parse_args()
    bed = LocalBed(Path(tempfile.mkdtemp(prefix="bench-costs-")) / "bed").up()
    proxy = DelayingProxy(bed.moto.port).start()
    try:
        runs = [run(bed, proxy, flush, args) for flush in args.flush]
        print(json.dumps({"benchmark": "repository_costs", "runs": runs}, indent=2))
    finally:
        proxy.stop()
        bed.down()


if __name__ == "__main__":
    main()
