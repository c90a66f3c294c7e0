"""Benchmark: backupd's replay vs a plain `mariadb-binlog FILES | mariadb` on the same binlogs.

Prints one JSON document. Run as root: `.venv/bin/python -m bench.restore_replay`.
Both runs replay the same files into freshly emptied databases on the same target server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from backupd.restore.replay import ReplayRange, ReplayServer, replay
from tests.testbed.mariadb import MariaDB


def workload(source: MariaDB, transactions: int, rows_per_trx: int) -> None:
    with source.connect_root() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE DATABASE bench_replay")
        cursor.execute(
            "CREATE TABLE bench_replay.t (id BIGINT PRIMARY KEY, k INT, v VARCHAR(200), KEY (k))"
        )
        next_id = 0
        for _ in range(transactions):
            values = []
            for _ in range(rows_per_trx):
                next_id += 1
                values.append(f"({next_id}, {next_id % 1000}, REPEAT('x', 100))")
            cursor.execute("BEGIN")
            cursor.execute(f"INSERT INTO bench_replay.t VALUES {','.join(values)}")
            cursor.execute(f"UPDATE bench_replay.t SET k = k + 1 WHERE id = {next_id}")
            cursor.execute("COMMIT")


def plain_pipe(files: list[Path], start: int, target: MariaDB) -> None:
    source = subprocess.Popen(
        ["mariadb-binlog", f"--start-position={start}", *map(str, files)], stdout=subprocess.PIPE
    )
    subprocess.run(
        ["mariadb", f"--socket={target.socket}", "--user=root", "--binary-mode"],
        stdin=source.stdout,
        check=True,
    )
    if source.wait() != 0:
        raise RuntimeError("mariadb-binlog failed")


def timed(label: str, run: Any, total_bytes: int, events: int) -> dict[str, Any]:
    started = time.monotonic()
    run()
    seconds = time.monotonic() - started
    return {
        "method": label,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total_bytes / seconds / 1e6, 2),
        "events_per_s": round(events / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    source = MariaDB(base / "src", base / "src" / "data", server_id=1)
    target = MariaDB(base / "dst", base / "dst" / "data", server_id=2)
    try:
        source.install()
        target.install()
        status = source.sql("SHOW MASTER STATUS")[0]
        file, start = str(status[0]), int(status[1])
        workload(source, args.transactions, args.rows)
        source.sql("FLUSH BINARY LOGS")
        names = sorted(p.name for p in source.binlog_dir.glob("mysql-bin.[0-9]*") if p.name >= file)
        files = [Path(shutil.copy(source.binlog_dir / n, base / n)) for n in names]
        spec = ReplayRange(files, start)
        total = spec.total_bytes()
        counted = replay(spec, ReplayServer(socket=target.socket, user="root"))
        expected = source.sql("CHECKSUM TABLE bench_replay.t")[0][1]
        assert target.sql("CHECKSUM TABLE bench_replay.t")[0][1] == expected
        results = []
        for label, run in (
            ("plain mariadb-binlog | mariadb", lambda: plain_pipe(files, start, target)),
            (
                "backupd replay",
                lambda: replay(spec, ReplayServer(socket=target.socket, user="root")),
            ),
        ):
            target.sql("DROP DATABASE IF EXISTS bench_replay")
            results.append(timed(label, run, total, counted.events))
            assert target.sql("CHECKSUM TABLE bench_replay.t")[0][1] == expected
        plain, ours = results
        print(
            json.dumps(
                {
                    "benchmark": "restore_replay",
                    "binlog_bytes": total,
                    "events": counted.events,
                    "transactions": args.transactions,
                    "results": results,
                    "ratio_vs_plain": round(plain["seconds"] / ours["seconds"], 3),
                },
                indent=2,
            )
        )
    finally:
        source.stop()
        target.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
