"""`backupctl find` on the real bed: MariaDB, moto's S3, the daemon archiving with its change
index. A workload of good writes hides one accidental mass DELETE at a random moment; find
names exactly that transaction first, from the repository alone (the daemon stopped), after
compaction merged the index, and again after every index object was deleted and backfilled
(the closed file's index rewritten to the byte: the same key).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pymysql
import pytest

from backupd.binlog import index_format, layout
from tests.clients import backupctl
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived, wait_for
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import MotoServer

pytestmark = pytest.mark.integration

MIN_ROWS = 100
SECRET = "bed-secret-4711"
TABLES = ("orders", "customers", "items")
JSON_KEYS: tuple[str, ...]  # a `find --json` record's keys, grown below as features came
JSON_KEYS = ("gtid", "timeline", "file", "pos", "end_pos", "commit_time", "tables", "rows", "kind")
JSON_KEYS += ("statement",)
JSON_KEYS += ("abandoned",)  # on a branch a later timeline abandoned (issue 13)


def good_write(cursor: Any, rng: random.Random) -> None:
    """An insert batch, an update, or a small delete (fewer than MIN_ROWS rows)."""
    table = rng.choice(TABLES)
    kind = rng.random()
    if kind < 0.5:
        values = ",".join(f"({rng.randint(1, 50)}, 'good-{rng.random()}')" for _ in range(5))
        cursor.execute(f"INSERT INTO shop.{table} (customer, note) VALUES {values}")
    elif kind < 0.85:
        cursor.execute(f"UPDATE shop.{table} SET note = 'upd' ORDER BY id DESC LIMIT 3")
    else:
        cursor.execute(f"DELETE FROM shop.{table} ORDER BY id DESC LIMIT 2")


def run_workload(db: MariaDB, rng: random.Random) -> tuple[str, int]:
    """Good writes around one accident at a random moment; (its GTID, rows it deleted)."""
    db.sql("DROP DATABASE IF EXISTS shop")
    db.sql("CREATE DATABASE shop")
    for table in TABLES:
        db.sql(
            f"CREATE TABLE shop.{table} (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, "
            "note VARCHAR(100), created TIMESTAMP(3) NULL DEFAULT CURRENT_TIMESTAMP(3))"
        )
        db.sql(
            f"INSERT INTO shop.{table} (customer, note) "
            "SELECT seq % 50, CONCAT('seed-', seq) FROM shop.seq_1_to_1000"
        )
    total = 400
    accident_at = rng.randrange(50, total - 50)
    conn: pymysql.connections.Connection[Any] = db.connect_root()
    gtid, deleted = "", 0
    with conn.cursor() as cursor:
        for step in range(total):
            if step == accident_at:
                deleted = cursor.execute("DELETE FROM shop.orders WHERE customer < 30")
                cursor.execute("SELECT @@last_gtid")
                row = cursor.fetchone()
                assert row is not None
                gtid = str(row[0])
            else:
                good_write(cursor, rng)
        cursor.execute(f"CREATE USER 'find_app'@'localhost' IDENTIFIED BY '{SECRET}'")
        cursor.execute("DROP USER 'find_app'@'localhost'")
    conn.close()
    assert deleted >= MIN_ROWS and gtid
    return gtid, deleted


def find(config: Path, *args: str) -> list[dict[str, Any]]:
    result = backupctl("--config", str(config), "--json", "find", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def index_keys(s3: Any, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return [key for key in keys if "/index/" in key]


@pytest.fixture
def s3_config(
    base_config: dict[str, Any], moto: MotoServer, write_config: ConfigFactory
) -> tuple[Path, dict[str, Any], str, Any]:
    bucket = f"find-{random.randrange(1 << 30)}"
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    config = binlog_config(base_config)
    config["storage"] = {
        "url": f"s3://{bucket}/repo",
        "endpoint_url": moto.url,
        "region": "us-east-1",
        "cluster": "shopbed",
    }
    return write_config(config), config, bucket, s3


def test_find_names_the_accident_first_from_the_repository_alone(
    live_mariadb: MariaDB,
    s3_config: tuple[Path, dict[str, Any], str, Any],
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    db = live_mariadb
    config, raw_config, bucket, s3 = s3_config
    db.sql("FLUSH BINARY LOGS")
    daemon = start_daemon(config)
    sock = str(raw_config["daemon"]["socket"])
    gtid, deleted = run_workload(db, random.Random())
    accident_file = str(db.sql("SHOW MASTER STATUS")[0][0])
    db.sql("FLUSH BINARY LOGS")  # closes the accident's file: compaction merges its index
    wait_archived(sock, db)
    prefix = f"repo/{layout.ROOT}/shopbed/tl"

    def merged() -> bool:
        keys = [k for k in index_keys(s3, bucket) if f"/{accident_file}/index/" in k]
        return len(keys) == 1 and "/000000000000-" in keys[0]

    wait_for(merged, "compaction to merge the accident file's index", timeout=120)
    daemon.stop()  # from here on: the repository alone
    log = daemon.log_path.read_text()
    for trouble in ("not indexed", "index worker", "had no change index"):
        assert trouble not in log  # every index was written while archiving, none after

    expected = {
        "gtid": gtid,
        "file": accident_file,
        "kind": "dml",
        "rows": deleted,
        "tables": {"shop.orders": {"insert": 0, "update": 0, "delete": deleted}},
    }
    found = find(config, "--table", "shop.orders", "--op", "delete", "--min-rows", str(MIN_ROWS))
    assert len(found) == 1
    assert {key: found[0][key] for key in expected} == expected
    assert sorted(found[0]) == sorted(JSON_KEYS)
    assert found[0]["statement"].startswith("DELETE FROM shop.orders WHERE customer < 30")
    assert found[0]["timeline"] == 1 and found[0]["pos"] < found[0]["end_pos"]
    assert found[0]["abandoned"] is False  # one timeline: nothing abandoned

    recent = find(config, "--table", "shop.*", "--limit", "20")
    times = [item["commit_time"] for item in recent]
    assert len(recent) == 20 and times == sorted(times, reverse=True)
    small = find(config, "--table", "shop.orders", "--op", "delete", "--limit", "500")
    assert gtid in [item["gtid"] for item in small] and len(small) > 1  # the good deletes too

    accounts = find(config, "--op", "ddl", "--statement", "create user")
    assert accounts and SECRET not in json.dumps(accounts) and "'***'" in accounts[0]["statement"]
    for key in index_keys(s3, bucket):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert SECRET.encode() not in index_format.text_of(body)  # every frame
    assert all(key.startswith(prefix) for key in index_keys(s3, bucket))

    # Backfill: every index object gone, `binlog index` writes them again from the archive.
    before = sorted(index_keys(s3, bucket))
    for key in before:
        s3.delete_object(Bucket=bucket, Key=key)
    missing = backupctl("--config", str(config), "--json", "find", "--table", "shop.orders")
    assert "no change index" in missing.stderr and json.loads(missing.stdout) == []
    started = time.monotonic()
    result = backupctl("--config", str(config), "--json", "binlog", "index", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["indexed"] >= len(before) and report["failed"] == []
    accident_index = [key for key in before if f"/{accident_file}/index/" in key]
    after = index_keys(s3, bucket)
    assert [key for key in after if f"/{accident_file}/index/" in key] == accident_index
    again = backupctl("--config", str(config), "--json", "binlog", "index")
    assert json.loads(again.stdout)["indexed"] == 0
    refound = find(config, "--table", "shop.orders", "--op", "delete", "--min-rows", str(MIN_ROWS))
    assert refound == found, f"backfill took {time.monotonic() - started:.1f}s"
