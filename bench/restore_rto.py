"""Benchmark: RTO on the local test bed — from `backupctl drill --to latest` to a scratch server
answering at the target, after a snapshot and N archived transactions since.

Prints one JSON document. Run as root: `.venv/bin/python -m bench.restore_rto`.
The bed: MariaDB on a loop-mounted ext4, moto as S3, `backupd run` archiving and snapshotting
with the local provider. `rto_seconds` is the drill's own clock (command start to the server
ready at the target: plan, fetch, image copy, mount, server start with crash recovery,
replay); `command_seconds` adds process start, CHECK/CHECKSUM TABLE and the cleanup.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.testbed.bed import LocalBed
from tests.testbed.daemon import BIN_DIR, DaemonProcess, NotifyListener
from tests.testbed.demo import wait_archived


def backupctl(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN_DIR / "backupctl"), "--json", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"backupctl {' '.join(args)}: {result.stderr.strip()}")
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def workload(bed: LocalBed, transactions: int) -> None:
    with bed.db.connect_root() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE DATABASE IF NOT EXISTS rto")
        cursor.execute("CREATE TABLE IF NOT EXISTS rto.t (id INT PRIMARY KEY, v VARCHAR(200))")
        for n in range(transactions):
            cursor.execute(f"INSERT INTO rto.t VALUES ({n}, REPEAT('x', 150))")
            conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=20000)
    args = parser.parse_args()
    bed = LocalBed(Path(tempfile.mkdtemp(prefix="bench-rto-")) / "bed").up()
    config = bed.write_config()
    notify = NotifyListener(bed.base / "notify.sock")
    daemon = DaemonProcess(config, bed.base / "backupd.log", notify)
    sock = ["--socket", str(bed.base / "run" / "control.sock")]
    try:
        daemon.start()
        snapshot = backupctl(*sock, "snapshot", "--wait")
        workload(bed, args.transactions)
        head = bed.db.sql("SHOW MASTER STATUS")[0]
        wait_archived(sock, f"{head[0]}:{head[1]}", timeout=300)
        started = time.monotonic()
        drill = backupctl("--config", str(config), "drill", "--to", "latest")
        command = time.monotonic() - started
        expected = int(bed.db.sql("CHECKSUM TABLE rto.t")[0][1])
        restored = {t["table"]: t["checksum"] for t in drill["tables"]}
        assert restored["`rto`.`t`"] == expected, "restored checksum differs"
        print(
            json.dumps(
                {
                    "benchmark": "restore_rto",
                    "snapshot_set": snapshot["set_id"],
                    "transactions_replayed": drill["end"]["transactions"],
                    "binlog_bytes_replayed": drill["replay"]["bytes"],
                    "rto_seconds": drill["ready_seconds"],
                    "command_seconds": round(command, 3),
                    "steps": drill["steps"],
                    "replay_events_per_s": round(
                        drill["replay"]["events"] / max(drill["replay"]["seconds"], 1e-9)
                    ),
                    "checksum_equal": True,
                },
                indent=2,
            )
        )
    finally:
        daemon.stop()
        notify.close()
        bed.down()


if __name__ == "__main__":
    main()
