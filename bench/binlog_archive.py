"""Benchmark the binlog archive; prints JSON.

1. Throughput archiving an existing backlog: backupd (replication client, CRC checks,
   segmenting, fsynced spool, zstd, file:// repository) against `mariadb-binlog
   --read-from-remote-server --raw` writing into FIFOs read by `zstd` (a true pipeline, both
   stages running at once), on the same binlogs in the same run.
2. Recovery-point age under a steady transaction rate: every 50 ms the server's write
   position and the daemon's archived coordinate are sampled; the age at time t is
   t - (latest sample time s whose server position is archived at t).

Method of part 1, so that like is compared with like and one noisy run decides nothing:
- Same bytes: both read every binlog the server lists, over the same socket, from the
  same server; after the first repetition the pipeline's files (decompressed) and
  backupd's repository (rebuilt with `binlog fetch`'s code) must be identical (sha256).
- Same compression: zstd level 3 with a frame checksum on both sides (`zstd -3` is
  single-threaded by default; backupd compresses each segment in one call).
- Warm-up: one untimed run of each first (page cache, server thread caches).
- Repetitions: `--reps` timed runs of each, alternating which goes first; each backupd run
  is a fresh daemon with an empty spool, state and repository. The ratio reported is the
  median pipeline time over the median backupd time; every run's figures are listed too.
- Timing: the pipeline from the start of `mariadb-binlog` until `zstd` has written its
  last file; backupd from READY until its state file (written after each upload) covers
  the server's position, polled every 10 ms. backupd's time thus includes connecting,
  listing the repository and every fsync (spool, repository, state); the pipeline fsyncs
  nothing.

3. The change index's cost: each repetition also runs backupd with `[binlog] index = false`;
   `change_index_throughput_ratio_median` is the median time without the index over the
   median time with it (1.0: free, 0.9: the index costs 10 % of the throughput). backupd's
   figures above are with the index (the default). Archiving does not wait for the index:
   `change_index_lag_seconds_median` is how much later every archived segment was indexed.

Run as root: .venv/bin/python -m bench.binlog_archive [--reps 5] [--seconds 20] [--tps 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zstandard

from backupd.binlog.archive import select
from backupd.binlog.fetch import fetch
from backupd.binlog.layout import file_order
from backupd.config import StorageSection
from backupd.control.client import ControlClient
from backupd.storage import open_store
from tests.testbed.daemon import DaemonProcess, NotifyListener, render_toml
from tests.testbed.mariadb import MariaDB
from tests.testbed.util import wait_until

Coordinate = tuple[tuple[str, int], int]
POLL = 0.01  # a coarser poll would add up to its period to backupd's time


def coordinate(text: str | None) -> Coordinate | None:
    if not text or ":" not in text:
        return None
    file, pos = text.rsplit(":", 1)
    return file_order(file), int(pos)


def master(db: MariaDB) -> Coordinate:
    row = db.sql("SHOW MASTER STATUS")[0]
    return file_order(str(row[0])), int(row[1])


def make_backlog(db: MariaDB, small_txns: int, bulk_rows: int) -> None:
    """Many small transactions (many events) plus bulk rows (volume), written quickly."""
    db.sql("SET GLOBAL sync_binlog = 0")
    db.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 0")
    db.sql("CREATE DATABASE IF NOT EXISTS bench")
    db.sql(
        "CREATE TABLE IF NOT EXISTS bench.t (id INT AUTO_INCREMENT PRIMARY KEY, "
        "v VARCHAR(255), n INT)"
    )
    db.sql(f"""BEGIN NOT ATOMIC
        DECLARE i INT DEFAULT 0;
        WHILE i < {small_txns} DO
            INSERT INTO bench.t (v, n) VALUES (CONCAT('small-', i, '-', RAND()), i);
            SET i = i + 1;
        END WHILE;
    END""")
    db.sql(
        "INSERT INTO bench.t (v, n) SELECT CONCAT(MD5(seq), MD5(seq + 1), RAND()), seq "
        f"FROM bench.seq_1_to_{bulk_rows}"
    )
    db.sql("FLUSH BINARY LOGS")
    db.sql("SET GLOBAL sync_binlog = 1")
    db.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 1")


def backlog_stats(db: MariaDB) -> tuple[int, int]:
    """(bytes, events) of every binlog file the server lists."""
    total = sum(int(row[1]) for row in db.sql("SHOW BINARY LOGS"))
    events = 0
    for row in db.sql("SHOW BINARY LOGS"):
        events += len(db.sql(f"SHOW BINLOG EVENTS IN '{row[0]}'"))
    return total, events


def baseline(db: MariaDB, work: Path) -> float:
    """Seconds for mariadb-binlog --raw | zstd over every listed file (FIFO pipeline)."""
    fifo_dir = work / "fifo"
    fifo_dir.mkdir()
    names = [str(row[0]) for row in db.sql("SHOW BINARY LOGS")]
    start = time.monotonic()
    compressors = []
    for name in names:
        fifo = fifo_dir / name
        subprocess.run(["mkfifo", str(fifo)], check=True)
        out = open(work / f"{name}.zst", "wb")  # noqa: SIM115 - closed below
        compressors.append(
            (subprocess.Popen(["zstd", "-3", "-q", "-c", str(fifo)], stdout=out), out)
        )
    subprocess.run(
        [
            "mariadb-binlog",
            "--read-from-remote-server",
            f"--socket={db.socket}",
            "-uroot",
            "--raw",
            "--to-last-log",
            f"--result-file={fifo_dir}/",
            names[0],
        ],
        check=True,
        timeout=600,
    )
    for proc, out in compressors:
        proc.wait(600)
        out.close()
    return time.monotonic() - start


def daemon_config(db: MariaDB, work: Path, index: bool = True) -> Path:
    config: dict[str, dict[str, Any]] = {
        "daemon": {
            "socket": str(work / "control.sock"),
            "socket_group": "root",
            "state_dir": str(work / "state"),
            "spool_dir": str(work / "spool"),
            "log_level": "info",
        },
        "metrics": {"listen": ""},
        "mysql": {"socket": db.socket, "option_file": str(db.option_file)},
        "storage": {"url": f"file://{work / 'repo'}"},
        "snapshot": {"enabled": False, "provider": "local"},
        "binlog": {"flush_seconds": 1.0, "index": index},
    }
    path = work / "backupd.toml"
    path.write_text(render_toml(config))
    return path


def archived_state(work: Path) -> Coordinate | None:
    """The archived coordinate from the daemon's state file: no work for the daemon."""
    try:
        state = json.loads((work / "state" / "binlog.json").read_text())
    except (OSError, ValueError):
        return None
    return file_order(state["file"]), int(state["position"])


def archived(client: ControlClient) -> Coordinate | None:
    return coordinate(client.request("GET", "/v1/binlog/status").get("archived_coordinate"))


def ours(db: MariaDB, work: Path, index: bool = True) -> tuple[float, float, DaemonProcess]:
    """(seconds from READY until everything listed is archived, seconds to READY, daemon).

    With `index` the change index is written too (stored before the state file moves past
    a segment, so its cost is inside the time). The daemon keeps running for the
    recovery-point part.
    """
    target = master(db)
    notify = NotifyListener(work / "notify.sock")
    start = time.monotonic()
    daemon = DaemonProcess(daemon_config(db, work, index), work / "backupd.log", notify).start()
    ready = time.monotonic()
    while (now := archived_state(work)) is None or now < target:
        time.sleep(POLL)
    return time.monotonic() - ready, ready - start, daemon


def indexed_after(work: Path) -> float:
    """Seconds until every archived segment is indexed too (its spool entry leaves only
    then; the index itself may wait for its batch in `index-pending/`)."""
    start = time.monotonic()
    wait_until(  # bounded: a daemon that died with a full spool must not hang the bench
        lambda: not any((work / "spool").rglob("*.seg")), 600, "the spool to be indexed", POLL
    )
    return time.monotonic() - start


def steady_load(
    db: MariaDB, tps: int, seconds: float, stop: threading.Event, done: list[int]
) -> None:
    """`tps` single-row transactions per second for `seconds`, from 4 connections."""

    def worker(share: int) -> None:
        conn = db.connect_root()
        interval = 4 / tps
        next_at = time.monotonic()
        with conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("INSERT INTO bench.t (v, n) VALUES ('steady', %s)", (share,))
                done[share] += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()


def sample_master(
    db: MariaDB, stop: threading.Event, history: list[tuple[float, Coordinate]]
) -> None:
    """The server's write position every 10 ms: the commit-time resolution of the ages."""
    conn = db.connect_root()
    with conn.cursor() as cursor:
        while not stop.is_set():
            now = time.monotonic()
            cursor.execute("SHOW MASTER STATUS")
            row = cursor.fetchone()
            assert row is not None
            history.append((now, (file_order(str(row[0])), int(row[1]))))
            stop.wait(0.01)
    conn.close()


def recovery_point(db: MariaDB, work: Path, tps: int, seconds: float) -> dict[str, Any]:
    """Age at t = t - (latest sample time whose server position is archived at t): an upper
    bound (the first transaction not covered committed after that sample)."""
    client = ControlClient(str(work / "control.sock"))
    stop = threading.Event()
    done = [0, 0, 0, 0]
    load = threading.Thread(target=steady_load, args=(db, tps, seconds, stop, done))
    history: list[tuple[float, Coordinate]] = []
    sampler = threading.Thread(target=sample_master, args=(db, stop, history))
    ages: list[float] = []
    started = time.monotonic()
    load.start()
    sampler.start()
    while load.is_alive():
        got = archived(client)
        now = time.monotonic()
        if got is not None and now - started > 2:  # skip the ramp-up
            covered = [s for s, pos in list(history) if pos <= got]
            ages.append(now - max(covered) if covered else now - started)
        time.sleep(0.05)
    sampler.join()
    ages.sort()
    return {
        "target_tps": tps,
        "achieved_tps": round(sum(done) / seconds, 1),
        "seconds": seconds,
        "samples": len(ages),
        "age_p50_seconds": round(statistics.median(ages), 3),
        "age_p99_seconds": round(ages[min(len(ages) - 1, int(len(ages) * 0.99))], 3),
        "age_max_seconds": round(ages[-1], 3),
    }


def same_bytes(raw: Path, ours_dir: Path) -> dict[str, bool]:
    """Per binlog: do the pipeline's file and backupd's rebuilt file hold the same bytes?"""
    store = open_store(StorageSection(url=f"file://{ours_dir / 'repo'}"))
    rebuilt = ours_dir / "rebuilt"
    fetch(store, rebuilt, select(store).stream)
    result = {}
    for packed in sorted(raw.glob("*.zst")):
        with open(packed, "rb") as handle:
            theirs = zstandard.ZstdDecompressor().stream_reader(handle).read()
        mine = rebuilt / packed.stem
        result[packed.stem] = mine.is_file() and sha256(theirs) == sha256(mine.read_bytes())
    return result


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def measure(db: MariaDB, base: Path, reps: int) -> dict[str, Any]:
    """Warm-up (whose outputs are compared byte for byte), then `reps` timed runs of each,
    alternating the order. Each daemon is stopped before the next run starts, so nothing
    else of the benchmark competes for the two cores."""
    size, events = backlog_stats(db)
    runs: dict[str, list[float]] = {"backupd": [], "no_index": [], "pipeline": [], "start": []}
    runs["index_lag"] = []
    kinds = ("pipeline", "backupd", "no_index")
    for rep in range(-1, reps):  # rep -1: the untimed warm-up
        shift = (rep + 1) % len(kinds)  # each goes first in turn
        for which in kinds[shift:] + kinds[:shift]:
            work = base / f"{which}-{rep + 1}"
            work.mkdir()
            if which == "pipeline":
                seconds = baseline(db, work)
            else:
                seconds, startup, daemon = ours(db, work, index=which == "backupd")
                if which == "backupd":
                    runs["index_lag"].append(indexed_after(work))
                daemon.stop()
                daemon.notify.close()
                if which == "backupd":
                    runs["start"].append(startup)
            runs[which].append(seconds)
        if rep == -1:
            checked = same_bytes(base / "pipeline-0", base / "backupd-0")
            runs = {name: [] for name in runs}
    mb = size / 1e6
    ours_s, raw_s = statistics.median(runs["backupd"]), statistics.median(runs["pipeline"])
    plain_s = statistics.median(runs["no_index"])
    repo = base / "backupd-1" / "repo"
    return {
        "backlog": {"bytes": size, "events": events},
        "repetitions": reps,
        "same_bytes": checked,
        "backupd": {
            "seconds_median": round(ours_s, 3),
            "seconds_runs": [round(x, 3) for x in runs["backupd"]],
            "daemon_start_seconds_median": round(statistics.median(runs["start"]), 3),
            "mb_per_s_median": round(mb / ours_s, 1),
            "events_per_s_median": round(events / ours_s),
            "stored_bytes": sum(p.stat().st_size for p in repo.rglob("*") if p.is_file()),
            "change_index_lag_seconds_median": round(statistics.median(runs["index_lag"]), 3),
            "change_index_stored_bytes": sum(
                p.stat().st_size for p in repo.rglob("*/index/*") if p.is_file()
            ),
        },
        "mariadb_binlog_raw_zstd": {
            "seconds_median": round(raw_s, 3),
            "seconds_runs": [round(x, 3) for x in runs["pipeline"]],
            "mb_per_s_median": round(mb / raw_s, 1),
            "events_per_s_median": round(events / raw_s),
            "stored_bytes": sum(p.stat().st_size for p in (base / "pipeline-1").glob("*.zst")),
        },
        "backupd_without_change_index": {
            "seconds_median": round(plain_s, 3),
            "seconds_runs": [round(x, 3) for x in runs["no_index"]],
            "mb_per_s_median": round(mb / plain_s, 1),
        },
        # throughput with the index over throughput without it (1.0: free; 0.9: 10 % cost)
        "change_index_throughput_ratio_median": round(plain_s / ours_s, 2),
        "change_index_throughput_ratio_runs": [
            round(p / o, 2) for p, o in zip(runs["no_index"], runs["backupd"], strict=True)
        ],
        "throughput_ratio_median": round(raw_s / ours_s, 2),
        "throughput_ratio_runs": [
            round(r / o, 2) for r, o in zip(runs["pipeline"], runs["backupd"], strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small-txns", type=int, default=100_000)
    parser.add_argument("--bulk-rows", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tps", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="backupd-bench-"))
    base.chmod(0o755)
    db = MariaDB(base / "db", base / "db" / "data", server_id=1)
    daemon = None
    try:
        db.install()
        make_backlog(db, args.small_txns, args.bulk_rows)
        result = measure(db, base, args.reps)
        (base / "steady").mkdir()
        _, _, daemon = ours(db, base / "steady")  # caught up again, then the steady load
        result["recovery_point"] = recovery_point(db, base / "steady", args.tps, args.seconds)
        print(json.dumps(result, indent=2))
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.notify.close()
        db.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
