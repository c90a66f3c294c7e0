"""`restore plan`, then `restore replay`, then `drill`: each archived object is downloaded once.

The repository is S3 (moto) behind a proxy that counts every GET by key, as S3 would bill
them. The first command fills the object cache in parallel; the next ones verify their
cached copies and fetch nothing. The replay still reproduces the server's checksums.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived
from tests.integration.test_costs import Proxied, proxied  # noqa: F401
from tests.integration.test_restore import StartDaemon, replay_latest_into_restored_server, run_json
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.mariadb import MariaDB
from tests.testbed.writer import Writer

pytestmark = pytest.mark.integration


def segment_gets(gets: dict[str, int]) -> dict[str, int]:
    """GETs of archived binlog segments (not manifests or the timeline history)."""
    return {p: n for p, n in gets.items() if "/binlog/" in p and not p.endswith(".json")}


def test_plan_then_replay_then_drill_download_each_object_once(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    workdir: Path,
    proxied: Proxied,  # noqa: F811
    restore_work_dir: Path,
) -> None:
    _s3, bucket, proxy = proxied
    db = live_mariadb
    schema = f"once_{uuid.uuid4().hex[:8]}"
    config = binlog_config(snap_config, flush_seconds=0.1, segment_max_bytes=16384)
    config["storage"] = {
        "url": f"s3://{bucket}/archive",
        "endpoint_url": proxy.url,
        "region": "us-east-1",
    }
    sock = config["daemon"]["socket"]
    daemon = start_daemon(write_config(config))
    db.sql(f"CREATE DATABASE {schema}")
    db.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    writer = Writer(db, f"{schema}.w", interval=0.005).start()
    try:
        writer.wait_for_commits(20)
        take(sock)
        writer.wait_for_commits(200)
        db.sql("FLUSH BINARY LOGS")  # the replay spans files
        db.sql(f"INSERT INTO {schema}.t VALUES (1, 'a'), (2, 'b')")
        writer.wait_for_commits(400)
    finally:
        writer.stop()
    wait_archived(sock, db)
    daemon.stop()  # no compaction may replace objects between the commands

    storage_only = write_config({"storage": config["storage"]}, "fresh-host.toml")
    fresh = write_config({"storage": config["storage"], "snapshot": config["snapshot"]}, "x.toml")
    code, plan = run_json(
        "--config", str(storage_only), "--json", "restore", "plan", "--to", "latest",
        "--fetch-workers", "4",
    )  # fmt: skip
    assert code == 0, plan
    assert len(plan["files"]) >= 2 and len(plan["segments"]) > 4, plan
    after_plan = segment_gets(dict(proxy.gets))
    assert after_plan and set(after_plan.values()) == {1}, after_plan
    assert all(any(p.endswith(key) for p in after_plan) for key in plan["segments"])
    assert not (restore_work_dir / "objects").stat().st_mode & 0o077

    replay_latest_into_restored_server(storage_only, fresh, workdir, db, schema)
    code, drill = run_json("--config", str(fresh), "--json", "drill", "--to", "latest")
    assert code == 0 and drill["result"] == "success", drill
    assert segment_gets(dict(proxy.gets)) == after_plan  # replay and drill fetched nothing

    code, cache = run_json("--config", str(storage_only), "--json", "restore", "cache")
    assert code == 0 and cache["entries"] == len(after_plan), cache  # one per object fetched
    assert not [p for p in restore_work_dir.iterdir() if p.name.startswith("run-")]
