"""Issue 13 on the real bed: an accidental DELETE in the middle of a good workload, then every
way back. A seeded workload of inserts, updates, small deletes and cross-table transactions
on several tables runs on the live server (archived by the daemon, after a snapshot) and on
a reference server; only the live one also runs `DELETE FROM shop.orders WHERE customer = 7`
at a random moment. Then:

- `drill --before <its GTID>` gives the checksums recorded just before it;
- `drill --skip <its GTID>` gives the reference server's checksums;
- `drill --before <GTID> --tables shop.orders --dump F`: F loaded into an empty server gives
  the recorded checksum of that table;
- `undo <GTID> --print`, applied to a copy of the server right after the accident, gives the
  table's checksum from before it;
- a skip that a later transaction depends on stops the replay with the server's error;
  unknown transactions and DDL are refused with the reason.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupd.config_loader import load_config
from backupd.restore.drill import materialised, start_scratch
from backupd.restore.scratch import ScratchServer
from backupd.snapshot.catalog import Catalog
from backupd.storage import open_store
from tests.clients import backupctl
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived, wait_for
from tests.integration.test_restore import StartDaemon, checksums, mine
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

SCHEMA = "shop"
ACCIDENT = f"DELETE FROM {SCHEMA}.orders WHERE customer = 7"
SETUP = [
    f"DROP DATABASE IF EXISTS {SCHEMA}",
    f"CREATE DATABASE {SCHEMA}",
    f"CREATE TABLE {SCHEMA}.orders (id INT PRIMARY KEY, customer INT NOT NULL, "
    "item VARCHAR(32) NOT NULL, qty INT NOT NULL, KEY (customer)) ENGINE=InnoDB",
    f"CREATE TABLE {SCHEMA}.stock (item VARCHAR(32) PRIMARY KEY, left_qty INT NOT NULL)",
    f"CREATE TABLE {SCHEMA}.customers (id INT PRIMARY KEY, name VARCHAR(32), visits INT)",
    f"INSERT INTO {SCHEMA}.stock VALUES " + ",".join(f"('item-{n}', 10000)" for n in range(12)),
    f"INSERT INTO {SCHEMA}.customers VALUES "
    + ",".join(f"({n}, 'customer-{n}', 0)" for n in range(1, 16)),
    f"INSERT INTO {SCHEMA}.orders VALUES "
    + ",".join(f"({n}, {n % 15 + 1}, 'item-{n % 12}', {n % 9 + 1})" for n in range(1, 301)),
]
INITIAL_ORDERS = {n: n % 15 + 1 for n in range(1, 301)}  # id -> customer


@dataclass
class Workload:
    """A seeded workload as lists of transactions (each a list of statements)."""

    seed: int
    before: list[list[str]] = field(default_factory=list)  # up to the accident
    after: list[list[str]] = field(default_factory=list)  # the good writes after it

    @classmethod
    def make(cls, seed: int, transactions: int = 160) -> Workload:
        rng = random.Random(seed)
        moment = rng.randrange(transactions // 3, 2 * transactions // 3)  # the random moment
        work = cls(seed)
        orders = dict(INITIAL_ORDERS)  # id -> customer
        for n in range(transactions):
            part = work.after if n >= moment else work.before
            part.append(_transaction(rng, orders, n, n >= moment))
        return work


def _transaction(rng: random.Random, orders: dict[int, int], n: int, after: bool) -> list[str]:
    """One transaction. After the accident nothing touches customer 7's orders (on the live
    server they are gone; the reference server must see the same effective writes)."""
    kind = rng.random()
    touchable = [i for i, c in orders.items() if not (after and c == 7)]
    if kind < 0.45 or len(touchable) < 10:
        customer = rng.choice([c for c in range(1, 16) if not (after and c == 7)])
        first = 1000 + n * 10
        rows = rng.randint(1, 4)
        item = f"item-{rng.randrange(12)}"
        for i in range(first, first + rows):
            orders[i] = customer
        values = ",".join(f"({i}, {customer}, '{item}', {rng.randint(1, 9)})" for i in range(
            first, first + rows))  # fmt: skip
        return [  # a cross-table transaction: the order and the stock it takes
            f"INSERT INTO {SCHEMA}.orders VALUES {values}",
            f"UPDATE {SCHEMA}.stock SET left_qty = left_qty - {rows} WHERE item = '{item}'",
        ]
    if kind < 0.75:
        target = rng.choice(touchable)
        return [f"UPDATE {SCHEMA}.orders SET qty = qty + {rng.randint(1, 3)} WHERE id = {target}"]
    if kind < 0.9:
        target = rng.choice(touchable)
        del orders[target]
        return [f"DELETE FROM {SCHEMA}.orders WHERE id = {target}"]
    visitor = rng.randint(1, 15)
    return [f"UPDATE {SCHEMA}.customers SET visits = visits + 1 WHERE id = {visitor}"]


def run(db: MariaDB, transactions: list[list[str]]) -> list[str]:
    """Each list of statements as one transaction; their GTIDs."""
    gtids = []
    with db.connect_root() as conn, conn.cursor() as cur:
        for statements in transactions:
            cur.execute("BEGIN")
            for statement in statements:
                cur.execute(statement)
            cur.execute("COMMIT")
            cur.execute("SELECT @@last_gtid")
            gtids.append(str(cur.fetchone()[0]))
    return gtids


def one(db: MariaDB, statement: str) -> tuple[str, int]:
    """Run one statement as its own transaction: its GTID and the rows it changed."""
    with db.connect_root() as conn, conn.cursor() as cur:
        rows = cur.execute(statement)
        cur.execute("SELECT @@last_gtid")
        row = cur.fetchone()
        assert row is not None
        return str(row[0]), int(rows)


def ctl(*args: str) -> tuple[int, Any, str]:
    """backupctl --json ...: exit code, the JSON document, stderr."""
    result = backupctl(*args, timeout=900)
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError:  # progress lines first, the document last
        lines = result.stdout.strip().splitlines()
        doc = json.loads(lines[-1]) if lines else {"stdout": result.stdout}
    return result.returncode, doc, result.stderr


def load_sql(socket: str, sql: str) -> None:
    client = shutil.which("mariadb") or "mysql"
    done = subprocess.run(
        [client, f"--socket={socket}", "--user=root", "--batch"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_find_the_accident_and_undo_only_it(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    restore_target: MariaDB,
    workdir: Path,
) -> None:
    db, reference = live_mariadb, restore_target
    # this test's transactions only: the archive also holds the session's older binlogs,
    # whose last segments may wait for compaction to index them
    since = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = binlog_config(snap_config)
    start_daemon(write_config(config))
    sock = config["daemon"]["socket"]
    work = Workload.make(seed=random.randrange(2**32))
    for server in (db, reference):
        run(server, [[s] for s in SETUP])
    record = take(sock)
    assert record["state"] == "completed", record

    dependent_gtid, _ = one(db, f"INSERT INTO {SCHEMA}.orders VALUES (99999, 3, 'item-1', 1)")
    one(reference, f"INSERT INTO {SCHEMA}.orders VALUES (99999, 3, 'item-1', 1)")
    for server in (db, reference):
        run(server, work.before)
    before = checksums(db, SCHEMA)  # just before the accident
    accident, deleted = one(db, ACCIDENT)
    assert deleted >= 15, (work.seed, deleted)
    after_accident = checksums(db, SCHEMA)
    assert after_accident != before
    next_gtid = run(db, work.after)[0]  # the first good transaction after the accident
    run(reference, work.after)
    for server in (db, reference):
        run(server, [[f"UPDATE {SCHEMA}.orders SET qty = qty + 1 WHERE id = 99999"]])
    ddl_gtid, _ = one(db, f"CREATE TABLE {SCHEMA}.audit (id INT PRIMARY KEY)")
    one(reference, f"CREATE TABLE {SCHEMA}.audit (id INT PRIMARY KEY)")
    db.sql("FLUSH BINARY LOGS")  # closes the file: its change index is stored now
    wait_archived(sock, db)
    expected_skip = checksums(reference, SCHEMA)
    assert expected_skip != checksums(db, SCHEMA)  # the accident made a difference

    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")
    base = ("--config", str(fresh), "--json")
    find_lists_it_first(base, accident, deleted, since)

    code, doc, _ = ctl(*base, "drill", "--before", accident, "--work-dir", str(workdir / "d1"))
    assert code == 0, (work.seed, doc)
    assert doc["target"] == f"before {accident}" and doc["skipped"] == []
    assert mine(doc["tables"], SCHEMA) == before, work.seed

    code, doc, stderr = ctl(
        *base, "drill", "--to", "latest", "--skip", accident, "--work-dir", str(workdir / "d2")
    )
    assert code == 0, (work.seed, doc)
    assert [s["gtid"] for s in doc["skipped"]] == [accident]
    assert "may have depended" in stderr and doc["warnings"]
    assert mine(doc["tables"], SCHEMA) == expected_skip, work.seed
    text = backupctl(*base[:2], "restore", "plan", "--to", "latest", "--skip", accident).stdout
    assert f"skipped: {accident} (" in text and "warning: skipping" in text, text

    dump = workdir / "orders.sql"
    code, doc, _ = ctl(
        *base, "drill", "--before", accident, "--tables", f"{SCHEMA}.orders",
        "--dump", str(dump), "--work-dir", str(workdir / "d3"),
    )  # fmt: skip
    assert code == 0 and doc["dump"]["file"] == str(dump), doc
    text = dump.read_text()
    assert f"-- target: before {accident}" in text.splitlines()[:3]
    run(reference, [[f"DROP DATABASE IF EXISTS {SCHEMA}"], [f"CREATE DATABASE {SCHEMA}"]])
    load_sql(reference.socket, text)
    assert checksums(reference, SCHEMA) == {f"`{SCHEMA}`.`orders`": before[f"`{SCHEMA}`.`orders`"]}

    undo_on_a_copy_right_after_it(fresh, workdir, next_gtid, accident, after_accident, before)
    refusals(base, workdir, dependent_gtid, ddl_gtid)
    run(db, [[f"DROP DATABASE IF EXISTS {SCHEMA}"]])


def find_lists_it_first(base: tuple[str, ...], accident: str, deleted: int, since: str) -> None:
    """`backupctl find` names the accident first (newest first, only the mass DELETE has
    that many rows)."""
    query: tuple[str, ...] = ("find", "--table", f"{SCHEMA}.orders", "--op", "delete")
    query += ("--min-rows", str(deleted), "--since", since)

    def searched_everything() -> tuple[int, Any] | None:
        """The newest segments' index is stored when their file closes (the FLUSH before)
        or after binlog.index_flush_seconds; until then find warns that it skipped them."""
        code, doc, stderr = ctl(*base, *query)
        return None if "no change index" in stderr else (code, doc)

    code, doc = wait_for(searched_everything, "the accident's file to be indexed", timeout=120)
    found = doc if isinstance(doc, list) else doc.get("transactions", doc.get("matches", []))
    assert code == 0 and found and found[0]["gtid"] == accident, doc


def undo_on_a_copy_right_after_it(
    fresh: Path,
    workdir: Path,
    next_gtid: str,
    accident: str,
    after_accident: dict[str, int],
    before: dict[str, int],
) -> None:
    """`restore replay --before <the transaction after the accident>` into a server on the
    restored snapshot makes a copy of the live server right after the accident (checked by
    its checksums); the printed undo, applied to it, restores the table."""
    config = load_config(fresh)
    sets, _ = Catalog(open_store(config.storage)).list()
    record = [s for s in sets if s.state == "completed"][-1]
    with materialised(record, config.snapshot.local.directory, workdir / "volumes") as mounts:
        copy = start_scratch(record, mounts, workdir / "srv")
        try:
            code, doc, _ = ctl(
                "--config", str(fresh), "--json", "restore", "replay", "--before", next_gtid,
                "--target-socket", copy.socket, "--target-user", "root",
            )  # fmt: skip
            assert code == 0 and doc["end"]["gtid"] == accident, doc
            assert scratch_checksums(copy, list(after_accident)) == after_accident
            result = backupctl("--config", str(fresh), "undo", accident, "--print", timeout=300)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"-- backupd undo preview of transaction {accident}")
            assert "### INSERT INTO `shop`.`orders`" in result.stdout  # the DELETE inverted
            load_sql(copy.socket, result.stdout)
            assert scratch_checksums(copy, list(before)) == before
        finally:
            copy.stop()


def scratch_checksums(server: ScratchServer, tables: list[str]) -> dict[str, int]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE {', '.join(tables)}")
        return {f"`{SCHEMA}`.`{row[0].split('.')[1]}`": int(row[1]) for row in cur.fetchall()}


def refusals(base: tuple[str, ...], workdir: Path, dependent: str, ddl: str) -> None:
    """A skipped insert a later update needs: the replay stops with the server's error.
    Unknown transactions, DDL and a missing --print are refused with the reason."""
    code, doc, _ = ctl(
        *base, "drill", "--to", "latest", "--skip", dependent, "--work-dir", str(workdir / "d4")
    )
    assert code != 0 and "find record" in json.dumps(doc), doc
    code, doc, _ = ctl(*base, "restore", "plan", "--before", "0-1-987654321")
    assert code == 1 and "0-1-987654321" in doc["error"]["message"], doc
    code, doc, _ = ctl(*base, "restore", "plan", "--to", "latest", "--skip", "0-1-987654321")
    assert code == 1 and "--skip 0-1-987654321" in doc["error"]["message"], doc
    code, doc, _ = ctl(*base, "restore", "plan", "--to", "latest", "--before", dependent)
    assert code == 2, doc
    result = backupctl(*base[:2], "undo", ddl, "--print", timeout=300)
    assert result.returncode == 1 and "DDL" in result.stderr, result.stderr
    result = backupctl(*base[:2], "undo", dependent)
    assert result.returncode == 2 and "--print" in result.stderr, result.stderr
