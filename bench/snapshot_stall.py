"""How long commits stall during a snapshot.

A writer commits at a steady rate into the bed's MariaDB (datadir on a loop-mounted ext4);
after a baseline period the running daemon takes N snapshots (`POST /v1/snapshots`, wait).
Prints JSON: commit latency p50/p99/max at baseline and during the snapshots, the extra
latency over the baseline p99, and each run's lock and freeze durations.

    .venv/bin/python -m bench.snapshot_stall [--snapshots 5] [--provider local|ebs] [--reflink]
    .venv/bin/python -m bench.snapshot_stall --provider ebs --ec2-latency 0.15 --volumes 2 --no-imds

`--reflink` puts the data image and the local snapshot directory on an XFS (reflink=1) loop
mount, so the local provider clones (FICLONE) instead of copying while frozen.
`--ec2-latency S` puts a proxy in front of moto that holds every EC2 request S seconds (a
distant endpoint); the JSON then adds the stall over that latency (goal: under 60 ms).
`--jitter` makes the writer pause a random 0..2*interval between commits: a steady writer
released by one stall (the freeze warm-up just before the lock) sleeps through the first
`interval` of the next, so its worst commit would understate the lock window.
`--volumes N` attaches N volumes; `--no-imds` leaves instance_id empty with no metadata
service, so the instance must come from DescribeVolumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from backupd.control.client import ControlClient
from tests.testbed.bed import LocalBed
from tests.testbed.daemon import DaemonProcess, NotifyListener, render_toml
from tests.testbed.proxy import DelayingProxy
from tests.testbed.writer import Commit, Writer


def latency_summary(commits: list[Commit]) -> dict[str, float]:
    values = sorted(c.latency for c in commits)
    if not values:
        return {"count": 0}
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return {
        "count": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


def configure(bed: LocalBed, args: argparse.Namespace, endpoint: str) -> Path:
    config: dict[str, Any] = bed.config()
    config["snapshot"].update({"enabled": False, "provider": args.provider})
    if args.provider == "ebs":
        ebs = config["snapshot"]["ebs"] = bed.ebs_section(args.volumes)
        ebs["endpoint_url"] = endpoint
        if args.no_imds:
            ebs.update({"instance_id": "", "imds_url": "http://127.0.0.1:9"})
    path = bed.base / "bench.toml"
    path.write_text(render_toml(config))
    return path


def measure(bed: LocalBed, sock: str, args: argparse.Namespace) -> dict[str, Any]:
    writer = Writer(bed.db, "bench.commits", interval=args.interval, jitter=args.jitter).start()
    time.sleep(args.baseline)  # the baseline is a stretch of time, not a synchronisation
    client = ControlClient(sock, timeout=600)
    runs = []
    phase_start = time.time()
    for _ in range(args.snapshots):
        runs.append(client.request("POST", "/v1/snapshots", {"wait": True}))
        time.sleep(args.gap)
    phase_end = time.time()
    commits = writer.stop()
    baseline = [c for c in commits if c.ended < phase_start]
    during = [c for c in commits if phase_start <= c.started <= phase_end]
    base, dur = latency_summary(baseline), latency_summary(during)
    return {
        "provider": args.provider,
        "reflink_bed": args.reflink,
        "snapshots": args.snapshots,
        "writer_interval_s": args.interval,
        "writer_jitter": args.jitter,
        "baseline": base,
        "during_snapshots": dur,
        "extra_over_baseline_p99_ms": round(dur.get("max_ms", 0) - base.get("p99_ms", 0), 3),
        "target_extra_ms": 50,
        **latency_fields(args, dur, runs),
        "runs": [
            {
                "state": r["state"],
                "lock_ms": round(r["lock_seconds"] * 1000, 3),
                "freeze_ms": round(r["freeze_seconds"] * 1000, 3),
                "method": ",".join(v["method"] for v in r["volumes"]),
            }
            for r in runs
        ],
    }


def latency_fields(
    args: argparse.Namespace, during: dict[str, float], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """With an injected EC2 latency: the stall beyond that one API call (the worst commit,
    and the median time commits stayed blocked, each minus the latency)."""
    if not args.ec2_latency:
        return {}
    latency_ms = args.ec2_latency * 1000
    locked = [r["lock_seconds"] * 1000 for r in runs if r["lock_seconds"]]
    return {
        "ec2_latency_ms": latency_ms,
        "volumes": args.volumes,
        "no_imds": args.no_imds,
        "extra_over_api_latency_ms": round(during.get("max_ms", 0) - latency_ms, 3),
        "lock_over_api_latency_p50_ms": round(statistics.median(locked) - latency_ms, 3)
        if locked
        else None,
        "lock_over_api_latency_max_ms": round(max(locked) - latency_ms, 3) if locked else None,
        "target_extra_over_api_ms": 60,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="/var/tmp/backupd-bench")
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of baseline")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between snapshots")
    parser.add_argument("--interval", type=float, default=0.01, help="pause between commits")
    parser.add_argument(
        "--jitter", action="store_true", help="pause a random 0..2*interval between commits"
    )
    parser.add_argument("--provider", choices=("local", "ebs"), default="local")
    parser.add_argument("--reflink", action="store_true", help="data image on XFS reflink=1")
    parser.add_argument("--ec2-latency", type=float, default=0.0, help="seconds per EC2 call")
    parser.add_argument("--volumes", type=int, default=1, help="EBS volumes in the set")
    parser.add_argument("--no-imds", action="store_true", help="no instance_id, no IMDS")
    args = parser.parse_args(argv)
    bed = LocalBed(Path(args.base), reflink=args.reflink).up()
    proxy = DelayingProxy(bed.moto.port, b"Action=", delay=args.ec2_latency).start()
    notify = NotifyListener(bed.base / "notify.sock")
    config = configure(bed, args, proxy.url)
    daemon = DaemonProcess(config, bed.base / "backupd.log", notify)
    try:
        daemon.start()
        result = measure(bed, str(bed.base / "run" / "control.sock"), args)
    finally:
        daemon.stop()
        notify.close()
        proxy.stop()
        bed.down()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
