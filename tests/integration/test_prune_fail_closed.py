"""Fail-closed retention on the real bed (MariaDB, moto S3 behind a proxy, the daemon): a
store that throttles the GET of one manifest must make `prune` delete nothing, binlog or set,
say why, count it and keep status unhealthy until a prune can see the whole repository."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from backupd.binlog import layout
from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.integration.test_snapshot_schedule import scrape
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import MotoServer
from tests.testbed.proxy import DelayingProxy

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
KEEP_TWO = {"keep_last": 2, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}


def keys(s3: Any, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def test_prune_with_one_unreadable_manifest_deletes_nothing(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    moto: MotoServer,
) -> None:
    db = live_mariadb
    bucket = f"prune-fail-closed-{random.randrange(1 << 30)}"
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    proxy = DelayingProxy(moto.port).start()
    try:
        config = binlog_config(snap_config)
        config["storage"] = {
            "url": f"s3://{bucket}/repo", "endpoint_url": proxy.url, "region": "us-east-1",
        }  # fmt: skip
        config["snapshot"]["retention"] = KEEP_TWO
        db.sql("FLUSH BINARY LOGS")
        start_daemon(write_config(config))
        sock = config["daemon"]["socket"]
        db.sql("FLUSH BINARY LOGS")
        db.sql("FLUSH BINARY LOGS")
        first = take(sock)
        db.sql("FLUSH BINARY LOGS")
        db.sql("FLUSH BINARY LOGS")
        second = take(sock)
        wait_archived(sock, db)
        first_file = first["coordinate"].split(":")[0]
        second_file = second["coordinate"].split(":")[0]
        assert layout.file_order(first_file) < layout.file_order(second_file)

        # The bed would delete: files before the first set's file go (no kept set needs them).
        code, healthy_plan = backupctl_json("--socket", sock, "prune", "--dry-run")
        assert code == 0 and healthy_plan["refused"] is None, healthy_plan
        assert healthy_plan["binlog_files"], healthy_plan
        assert all(
            layout.file_order(name.rsplit("/", 1)[1]) < layout.file_order(first_file)
            for name in healthy_plan["binlog_files"]
        )

        # Throttle the GET of the older kept set's manifest: LIST still shows it.
        proxy.fail_gets(f"snapshots/{first['set_id']}.json")
        before = keys(s3, bucket)
        code, dry = backupctl_json("--socket", sock, "prune", "--dry-run")
        assert code == 1 and dry["refused"]["code"] == "prune_refused", dry
        assert dry["delete"] == [] and dry["binlog_files"] == []
        assert any(first["set_id"] in reason for reason in dry["refused"]["reasons"]), dry
        assert dry["refused"]["kinds"] == ["unreadable_manifest"]
        text = backupctl("--socket", sock, "prune", "--dry-run")
        assert text.returncode == 1 and first["set_id"] in text.stdout, text.stdout

        code, done = backupctl_json("--socket", sock, "prune")
        assert code == 1 and done["error"]["code"] == "prune_refused", done
        assert first["set_id"] in done["error"]["message"]
        assert keys(s3, bucket) == before  # not one binlog object, not one manifest went
        assert proxy.failed_gets > 0

        code, listing = backupctl_json("--socket", sock, "snapshots")
        assert code == 0 and [s["set_id"] for s in listing["snapshots"]] == [second["set_id"]]
        assert [u["set_id"] for u in listing["unreadable_sets"]] == [first["set_id"]]
        code, state = backupctl_json("--socket", sock, "status")
        assert code == 4 and state["healthy"] is False, state
        assert any("Prune refused" in w for w in state["warnings"]), state["warnings"]
        samples = scrape(state["daemon"]["metrics_address"])
        refused = samples['backupd_prune_refused_total{reason="unreadable_manifest"}']
        assert refused == 3  # two dry runs and the real one
        assert samples["backupd_prune_blocked"] == 1

        # A LIST that fails refuses too.
        proxy.cut()
        code, dry = backupctl_json("--socket", sock, "prune", "--dry-run")
        assert code == 1 and dry["refused"]["kinds"] == ["listing_error"], dry
        proxy.restore()

        # Once the store answers again, prune acts, and only on what no kept set needs.
        proxy.fail_gets()
        code, done = backupctl_json("--socket", sock, "prune")
        assert code == 0 and done["refused"] is None and done["deleted"] == [], done
        assert done["binlog_files"] == healthy_plan["binlog_files"]
        after = keys(s3, bucket)
        assert f"repo/snapshots/{first['set_id']}.json" in after
        assert any(f"/{first_file}/" in key for key in after)
        code, state = backupctl_json("--socket", sock, "status")
        assert not any("Prune refused" in w for w in state["warnings"]), state["warnings"]
        assert scrape(state["daemon"]["metrics_address"])["backupd_prune_blocked"] == 0
    finally:
        proxy.stop()
