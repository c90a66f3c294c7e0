"""Benchmark: backupd's replay methods vs a plain `mariadb-binlog FILES | mariadb`.

Prints one JSON document. Run as root: `.venv/bin/python -m bench.restore_replay`.
Two recorded workloads: `concurrent` (8 clients over several tables: parallelism exists) and
`hot_row` (8 clients updating one row: none does). Each is replayed into the same target
server (the test bed's durability: sync_binlog=1, innodb_flush_log_at_trx_commit=1, or
with --relaxed-target a drill's: no fsync per commit; and log_slave_updates so the relay
method's applier binlogs like the pipe's client does) by the
plain pipe, backupd's pipe and backupd's relay method, its database emptied between runs
and its table checksums compared with the source's after each.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backupd.restore.relay import replay_relay
from backupd.restore.relay_target import Method
from backupd.restore.replay import ReplayRange, ReplayServer, replay
from tests.testbed.mariadb import MariaDB

SCHEMA = "bench_replay"


def concurrent(source: MariaDB, client: int, transactions: int, rows: int, tables: int) -> None:
    """One client: transactions of `rows` inserts plus an update, on a random table each."""
    pick = random.Random(client)
    with source.connect_root() as conn, conn.cursor() as cursor:
        for number in range(transactions):
            table = f"{SCHEMA}.t{pick.randrange(tables)}"
            first = (client * transactions + number) * rows
            values = ",".join(
                f"({first + i}, {(first + i) % 1000}, REPEAT('x', 100))" for i in range(rows)
            )
            cursor.execute("BEGIN")
            cursor.execute(f"INSERT INTO {table} VALUES {values}")
            cursor.execute(f"UPDATE {table} SET k = k + 1 WHERE id = {first}")
            cursor.execute("COMMIT")


def hot_row(source: MariaDB, _client: int, transactions: int, _rows: int, _tables: int) -> None:
    """One client: transactions that all update the same row (no parallelism to find)."""
    with source.connect_root() as conn, conn.cursor() as cursor:
        for _ in range(transactions):
            cursor.execute("BEGIN")
            cursor.execute(f"UPDATE {SCHEMA}.t0 SET k = k + 1, v = REPEAT('y', 100) WHERE id = 0")
            cursor.execute("COMMIT")


WORKLOADS: dict[str, Callable[[MariaDB, int, int, int, int], None]] = {
    "concurrent": concurrent,
    "hot_row": hot_row,
}


def record(source: MariaDB, name: str, clients: int, transactions: int, rows: int, tables: int) -> (
    tuple[list[str], int]
):  # fmt: skip
    """Run the workload from `clients` threads; the binlog files and start position."""
    source.sql(f"DROP DATABASE IF EXISTS {SCHEMA}")
    source.sql("FLUSH BINARY LOGS")
    status = source.sql("SHOW MASTER STATUS")[0]
    file, start = str(status[0]), int(status[1])
    source.sql(f"CREATE DATABASE {SCHEMA}")
    for number in range(tables):
        source.sql(
            f"CREATE TABLE {SCHEMA}.t{number} "
            "(id BIGINT PRIMARY KEY, k INT, v VARCHAR(200), KEY (k)) ENGINE=InnoDB"
        )
    source.sql(f"INSERT INTO {SCHEMA}.t0 VALUES (0, 0, '')")
    work = WORKLOADS[name]
    threads = [
        threading.Thread(target=work, args=(source, n, transactions // clients, rows, tables))
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    source.sql("FLUSH BINARY LOGS")
    names = sorted(p.name for p in source.binlog_dir.glob("mysql-bin.[0-9]*") if p.name >= file)
    return names[:-1], start  # the newest file is the empty one FLUSH opened


def checksums(server: MariaDB, tables: int) -> list[int]:
    listed = ", ".join(f"{SCHEMA}.t{n}" for n in range(tables))
    return [int(row[1]) for row in server.sql(f"CHECKSUM TABLE {listed}")]


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


def timed(label: str, run: Callable[[], Any], total_bytes: int) -> dict[str, Any]:
    started = time.monotonic()
    run()
    seconds = time.monotonic() - started
    return {
        "method": label,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total_bytes / seconds / 1e6, 2),
    }


def retries(server: MariaDB) -> int:
    """Transactions the parallel applier rolled back and ran again (optimistic conflicts)."""
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Slave_retried_transactions'")[0][1])


def measure(
    files: list[Path], start: int, target: MariaDB, expected: list[int], tables: int, relay: Method
) -> list[dict[str, Any]]:
    spec = ReplayRange(files, start)
    server = ReplayServer(socket=target.socket, user="root")
    runs: list[tuple[str, Callable[[], Any]]] = [
        ("plain mariadb-binlog | mariadb", lambda: plain_pipe(files, start, target)),
        ("backupd pipe", lambda: replay(spec, server)),
        ("backupd relay", lambda: replay_relay([spec], server, relay)),
    ]
    results = []
    for label, run in runs:
        target.sql(f"DROP DATABASE IF EXISTS {SCHEMA}")
        retried = retries(target)
        results.append(timed(label, run, spec.total_bytes()))
        results[-1]["retried_transactions"] = retries(target) - retried
        if checksums(target, tables) != expected:
            raise RuntimeError(f"{label}: the target's checksums differ from the source's")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=4000)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8, help="relay: parallel applier threads")
    parser.add_argument("--runs", type=int, default=3, help="replays of each workload")
    parser.add_argument("--parallel-mode", default="optimistic", help="relay: slave_parallel_mode")
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS), help="(all)")
    parser.add_argument(
        "--relaxed-target",
        action="store_true",
        help="target without per-commit fsync (sync_binlog=0, trx_commit=2), like a drill's",
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    source = MariaDB(base / "src", base / "src" / "data", server_id=1)
    target = MariaDB(
        base / "dst", base / "dst" / "data", server_id=2, extra="log_slave_updates = ON\n"
    )
    report: dict[str, Any] = {"benchmark": "restore_replay", "workloads": {}}
    try:
        source.install()
        target.install()
        if args.relaxed_target:
            target.sql("SET GLOBAL sync_binlog = 0")
            target.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        report["target_fsync_per_commit"] = not args.relaxed_target
        relay = Method("relay", "benchmark", args.workers, args.parallel_mode)
        for name in args.workload or list(WORKLOADS):
            names, start = record(
                source, name, args.clients, args.transactions, args.rows, args.tables
            )
            expected = checksums(source, args.tables)
            copies = base / name
            copies.mkdir()
            files = [Path(shutil.copy(source.binlog_dir / n, copies / n)) for n in names]
            runs = [
                measure(files, start, target, expected, args.tables, relay)
                for _ in range(args.runs)
            ]
            ratios = [round(r[0]["seconds"] / r[2]["seconds"], 2) for r in runs]
            report["workloads"][name] = {
                "binlog_bytes": ReplayRange(files, start).total_bytes(),
                "transactions": args.transactions,
                "clients": args.clients,
                "runs": runs,
                "relay_vs_plain": ratios,
                "pipe_vs_plain": [round(r[0]["seconds"] / r[1]["seconds"], 2) for r in runs],
            }
        report["relay_workers"] = args.workers
        report["relay_parallel_mode"] = args.parallel_mode
        print(json.dumps(report, indent=2))
    finally:
        source.stop()
        target.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
