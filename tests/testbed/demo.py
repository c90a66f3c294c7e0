"""`make demo`: the whole job on an embedded local default, in the foreground.

Brings up a throwaway MariaDB on a loop-mounted ext4 and moto as the S3/EC2 endpoint, runs
`backupd run` on them, and shows what an operator sees. Ctrl-C (or --once) tears it all down.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from backupd.binlog.layout import file_order
from tests.testbed.bed import LocalBed
from tests.testbed.daemon import BIN_DIR, DaemonProcess, NotifyListener, render_toml
from tests.testbed.proxy import DelayingProxy
from tests.testbed.writer import Writer


def show(*args: str) -> int:
    print(f"\n$ backupctl {' '.join(args)}", flush=True)
    return subprocess.run([str(BIN_DIR / "backupctl"), *args], check=False).returncode


def binlog_step(bed: LocalBed, sock: list[str], config: Path) -> int:
    """Stream the binlog while a small workload runs, then show it archived and rebuilt."""
    print("\ndemo: a small workload runs while backupd streams the binlog to S3", flush=True)
    bed.db.sql("CREATE DATABASE IF NOT EXISTS shop")
    bed.db.sql(
        "CREATE TABLE IF NOT EXISTS shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, "
        "item VARCHAR(64), qty INT)"
    )
    for n in range(200):
        bed.db.sql(f"INSERT INTO shop.orders (item, qty) VALUES ('item-{n % 17}', {n % 5 + 1})")
    target = bed.db.sql("SHOW MASTER STATUS")[0]
    wait_archived(sock, f"{target[0]}:{target[1]}")
    failures: int = show(*sock, "binlog", "status") != 0
    dest = bed.base / "fetched"
    failures += show("--config", str(config), "binlog", "fetch", "--dest", str(dest)) != 0
    return failures


def wait_archived(sock: list[str], coordinate: str, timeout: float = 60) -> None:
    """Poll `binlog status` until the archive holds `coordinate` (its recovery point);
    TimeoutError when it does not within `timeout` (callers measure or assert after it)."""
    file, pos = coordinate.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            [str(BIN_DIR / "backupctl"), *sock, "--json", "binlog", "status"],
            capture_output=True,
            text=True,
            check=False,
        )
        archived = json.loads(result.stdout or "{}").get("archived_coordinate") or ":0"
        got_file, got_pos = archived.rsplit(":", 1)
        if got_file and (file_order(got_file), int(got_pos)) >= (file_order(file), int(pos)):
            return
        time.sleep(0.2)  # the archived position has no event to wait on: poll
    raise TimeoutError(f"the archive did not reach {coordinate} within {timeout}s")


def restore_step(bed: LocalBed, sock: list[str], config: Path) -> tuple[int, str]:
    """Record the orders at an instant, lose them, then prove a drill restores that instant.
    Returns the failures and the accident's GTID."""
    keep_reference(bed)
    checksum = int(bed.db.sql("CHECKSUM TABLE shop.orders")[0][1])
    instant = int(time.time())
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))
    time.sleep(max(0.0, instant + 1.05 - time.time()))  # binlog times have 1 s resolution
    print(f"\ndemo: at {moment} shop.orders has checksum {checksum}; now an accident:", flush=True)
    print("demo: DELETE FROM shop.orders WHERE qty > 2", flush=True)
    accident = gtid_of(bed, "DELETE FROM shop.orders WHERE qty > 2")
    target = bed.db.sql("SHOW MASTER STATUS")[0]
    wait_archived(sock, f"{target[0]}:{target[1]}")
    failures: int = show("--config", str(config), "restore", "plan", "--to", moment) != 0
    # The daemon is on moto's EC2 now, whose attachments make no device: drill the local
    # provider's images from this shell (`--local`; without it the daemon would run it).
    local = bed.base / "drill-local.toml"
    local.write_text(render_toml(bed.config()))
    print(f"\n$ backupctl --config {local} drill --to {moment} --local", flush=True)
    result = subprocess.run(
        [
            str(BIN_DIR / "backupctl"),
            "--config",
            str(local),
            "--json",
            "drill",
            "--to",
            moment,
            "--local",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    doc = json.loads(result.stdout or "{}")
    tables = {t["table"]: t for t in doc.get("tables", [])}
    restored = tables.get("`shop`.`orders`", {})
    print(
        f"drill {doc.get('result', 'failed')}: scratch server ready at {moment} after "
        f"{doc.get('ready_seconds')}s (replayed by {doc.get('method', {}).get('name')}: "
        f"{doc.get('method', {}).get('why')}), CHECK TABLE {restored.get('check')}, "
        f"shop.orders checksum {restored.get('checksum')}",
        flush=True,
    )
    equal = restored.get("checksum") == checksum
    print(
        f"demo: proof — checksum at the target instant {checksum} "
        f"{'==' if equal else '!='} restored {restored.get('checksum')}",
        flush=True,
    )
    print("demo: the drill downloaded nothing the plan had fetched (the object cache):")
    failures += show("--config", str(config), "restore", "cache") != 0
    failures += pinned_volumes(config, moment)
    return failures + (result.returncode != 0) + (not equal), accident


REFERENCE = "demo_reference.orders"  # the orders as if the accident never happened


def keep_reference(bed: LocalBed) -> None:
    """A copy of the orders that never sees the accident but gets every good write after it:
    what `drill --skip` must reproduce."""
    bed.db.sql("CREATE DATABASE IF NOT EXISTS demo_reference")
    bed.db.sql(f"CREATE TABLE {REFERENCE} LIKE shop.orders")
    bed.db.sql(f"INSERT INTO {REFERENCE} SELECT * FROM shop.orders")


def gtid_of(bed: LocalBed, statement: str) -> str:
    with bed.db.connect_root() as conn, conn.cursor() as cursor:
        cursor.execute(statement)
        cursor.execute("SELECT @@last_gtid")
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def drill_checksum(config: Path, *target: str) -> tuple[int, int | None]:
    """Run `backupctl drill` (shown); its exit code and the restored shop.orders checksum."""
    print(f"\n$ backupctl drill {' '.join(target)}", flush=True)
    result = subprocess.run(
        [str(BIN_DIR / "backupctl"), "--config", str(config), "--json", "drill", *target],
        capture_output=True,
        text=True,
        check=False,
    )
    doc = json.loads(result.stdout or "{}")
    tables = {t["table"]: t["checksum"] for t in doc.get("tables", [])}
    skipped = ", ".join(s["named"] for s in doc.get("skipped", [])) or "nothing"
    print(f"drill {doc.get('result', 'failed')}; skipped {skipped}", flush=True)
    return result.returncode, tables.get("`shop`.`orders`")


def wait_indexed(find: list[str], timeout: float = 120) -> None:
    """Until `find` searched every segment (it warns about those whose index is not stored)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [str(BIN_DIR / "backupctl"), *find], capture_output=True, text=True, check=False
        )
        if "no change index" not in done.stderr:
            return
        time.sleep(0.5)  # the daemon stores the closed file's index in the background


def undo_step(bed: LocalBed, sock: list[str], config: Path, accident: str) -> int:
    """README "Undo an accident": find it, restore to right before it, replay everything but
    it, dump the one table, print its inverse. Good orders keep coming after the accident."""
    before = int(bed.db.sql(f"CHECKSUM TABLE {REFERENCE}")[0][1])
    for n in range(20):
        for table in ("shop.orders", REFERENCE):
            bed.db.sql(f"INSERT INTO {table} (id, item, qty) VALUES ({10000 + n}, 'late', 3)")
    bed.db.sql("FLUSH BINARY LOGS")  # closes the file: its change index is stored now
    target = bed.db.sql("SHOW MASTER STATUS")[0]
    wait_archived(sock, f"{target[0]}:{target[1]}")
    print(f"\ndemo: 20 good orders came in after the accident ({accident})", flush=True)
    conf = ["--config", str(config)]
    find = [*conf, "find", "--table", "shop.orders", "--op", "delete", "--min-rows", "10"]
    wait_indexed(find)
    failures: int = show(*find) != 0
    failures += show(*conf, "restore", "plan", "--before", accident) != 0
    local = bed.base / "drill-local.toml"  # drills restore the local images (see restore_step)
    code, restored = drill_checksum(local, "--before", accident)
    print(f"demo: proof — before the accident {before} {'==' if restored == before else '!='} "
          f"restored {restored}", flush=True)  # fmt: skip
    failures += code != 0 or restored != before
    expected = int(bed.db.sql(f"CHECKSUM TABLE {REFERENCE}")[0][1])
    code, restored = drill_checksum(local, "--to", "latest", "--skip", accident)
    print(f"demo: proof — never-deleted orders {expected} "
          f"{'==' if restored == expected else '!='} restored {restored}", flush=True)  # fmt: skip
    failures += code != 0 or restored != expected
    dump = bed.base / "orders-before-accident.sql"
    dump.unlink(missing_ok=True)
    failures += show("--config", str(local), "drill", "--before", accident,
                     "--tables", "shop.orders", "--dump", str(dump)) != 0  # fmt: skip
    if dump.exists():
        print("".join(dump.read_text().splitlines(keepends=True)[:6]), end="", flush=True)
    print(f"\n$ backupctl undo {accident} --print", flush=True)
    undo = subprocess.run([str(BIN_DIR / "backupctl"), *conf, "undo", accident, "--print"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    lines = undo.stdout.splitlines()
    shown = [line for line in lines if line.startswith("-- ")] + [
        line for line in lines if line.startswith("### ")][:8]  # fmt: skip
    print("\n".join(shown) + f"\n... ({len(lines)} lines; review, then apply by hand)", flush=True)
    return failures + (undo.returncode != 0)


def pinned_volumes(config: Path, moment: str) -> int:
    """On EC2 (moto): new volumes from the set for `moment`, the restore record, and the exact
    `restore replay --record` command that continues from that set only."""
    zone = "us-east-1a"  # the bed's region; moto accepts its zones
    return show(
        "--config", str(config), "restore", "volumes", "--to", moment, "--availability-zone", zone
    )


def switch_to_ebs(bed: LocalBed, config: Path, daemon: DaemonProcess) -> int:
    """Point the running daemon at moto's EC2 (an instance with a data volume), via SIGHUP."""
    settings = bed.config()
    settings["snapshot"].update({"provider": "ebs", "ebs": bed.ebs_section()})
    config.write_text(render_toml(settings))
    print('\ndemo: [snapshot] provider = "ebs" (moto), then SIGHUP', flush=True)
    return reload(daemon)


def reload(daemon: DaemonProcess) -> int:
    daemon.signal(signal.SIGHUP)
    try:
        daemon.notify.wait_for("STATUS", "config reloaded")
    except TimeoutError as exc:
        print(f"demo: reload failed: {exc}")
        return 1
    return 0


def deadline_step(bed: LocalBed, config: Path, daemon: DaemonProcess, sock: list[str]) -> int:
    """EC2 stops answering mid-snapshot (two volumes, no instance metadata): commits wait at
    most max_freeze_seconds, the run fails with the reason, the lock is gone."""
    saved = config.read_text()
    proxy = DelayingProxy(bed.moto.port, b"Action=CreateSnapshots", delay=60, hang=True).start()
    settings = bed.config()
    ebs = bed.ebs_section(volumes=2)
    ebs.update({"endpoint_url": proxy.url, "instance_id": "", "imds_url": "http://127.0.0.1:9"})
    settings["snapshot"].update(
        {"provider": "ebs", "ebs": ebs, "max_freeze_seconds": 2.0, "lock_attempts": 1}
    )
    config.write_text(render_toml(settings))
    print(
        "\ndemo: EC2 now accepts CreateSnapshots and never answers; max_freeze_seconds = 2, "
        "a writer commits every 10 ms",
        flush=True,
    )
    writer = Writer(bed.db, "demo.commits", interval=0.01).start()
    try:
        failures = reload(daemon)
        failures += show(*sock, "snapshot", "--wait") == 0  # expected to fail: the deadline
    finally:
        commits = writer.stop()
        proxy.stop()
        config.write_text(saved)
    worst = max(c.latency for c in commits)
    print(f"demo: the longest commit waited {worst:.2f}s (budget 2s); the lock was released")
    return failures + (worst > 3.0) + reload(daemon)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--base", default="/var/tmp/backupd-demo", help="scratch directory")
    parser.add_argument("--once", action="store_true", help="show the tour, then tear down")
    args = parser.parse_args(argv)
    bed = LocalBed(Path(args.base))
    print(f"demo: bringing up MariaDB, moto and a loop filesystem under {bed.base}", flush=True)
    bed.up()
    config = bed.write_config()
    notify = NotifyListener(bed.base / "notify.sock")
    daemon = DaemonProcess(config, bed.base / "backupd.log", notify)
    failures = 0
    try:
        daemon.start()
        print(f"demo: backupd is running (config {config}, log {daemon.log_path})", flush=True)
        sock = ["--socket", str(bed.base / "run" / "control.sock")]
        failures += show(*sock, "probe") != 0
        failures += show(*sock, "status") != 0
        failures += show(*sock, "snapshot", "--wait") != 0  # local provider: an image file
        failures += switch_to_ebs(bed, config, daemon)
        failures += show(*sock, "snapshot", "--wait") != 0  # EBS against moto's EC2
        failures += deadline_step(bed, config, daemon, sock)
        failures += show(*sock, "snapshots") != 0
        failures += show(*sock, "prune", "--dry-run") != 0
        failures += binlog_step(bed, sock, config) != 0
        failed, accident = restore_step(bed, sock, config)
        failures += failed != 0
        failures += undo_step(bed, sock, config, accident)
        if not args.once:
            print("\ndemo: backupd keeps running; Ctrl-C to stop and tear down", flush=True)
            assert daemon.process is not None
            daemon.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.stop()
        notify.close()
        bed.down()
    print(f"demo: {'done' if not failures else f'{failures} step(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
