"""What a freeze costs by itself: FIFREEZE on an idle loop-mounted ext4, no database.

A "cold" freeze comes a while after the last thaw; a "warm" one within a few ms of a thaw.
On the test bed the cold one takes tens of ms with nothing to flush: the kernel waits out RCU
grace periods in freeze_super (with /sys/kernel/rcu_expedited=1 it drops below 1 ms), and
writers already block for most of that time. This is the floor of the snapshot lock window.

    .venv/bin/python -m bench.freeze_cost [--freezes 10] [--fstype ext4|xfs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from backupd import freeze
from tests.testbed.loopfs import LoopFilesystem


def freeze_ms(fd: int) -> float:
    started = time.perf_counter()
    freeze.freeze_fd(fd)
    frozen = time.perf_counter()
    freeze.thaw_fd(fd)
    return (frozen - started) * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 3),
        "max_ms": round(max(values), 3),
        "min_ms": round(min(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="/var/tmp/backupd-freeze-bench")
    parser.add_argument("--freezes", type=int, default=10)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds before a cold freeze")
    parser.add_argument("--fstype", choices=("ext4", "xfs"), default="ext4")
    args = parser.parse_args(argv)
    base = Path(args.base)
    fs = LoopFilesystem(base / "fs.img", base / "mnt", size_mb=512, fstype=args.fstype)
    fs.unmount()  # whatever an interrupted run left
    fs.create()
    fd = freeze.open_mount(str(fs.mount_point))
    cold, warm = [], []
    try:
        for _ in range(args.freezes):
            time.sleep(args.gap)  # let the last thaw age: that is what is being measured
            cold.append(freeze_ms(fd))
            warm.append(freeze_ms(fd))
    finally:
        freeze.thaw_fd(fd)
        os.close(fd)
        fs.destroy()
    result = {"fstype": args.fstype, "cold": summary(cold), "warm_after_thaw": summary(warm)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
