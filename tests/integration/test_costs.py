"""What archiving costs in S3 requests, counted through a proxy in front of moto.

Under steady writes backupd PUTs one segment per `flush_seconds`; idle, it PUTs nothing (a
HeadBucket probe every 30 s is all). The daemon's own count (`backupd_repository_requests_total`,
`backupctl status`) equals what reached the endpoint. Figures over longer windows:
bench/repository_costs.py and docs/costs.md.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.testbed.costs import bucket_sizes, measure
from tests.testbed.daemon import DaemonProcess
from tests.testbed.demo import wait_archived
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import MotoServer
from tests.testbed.proxy import DelayingProxy

pytestmark = pytest.mark.integration

LOAD_SECONDS = 8.0
IDLE_SECONDS = 5.0


def daemon_requests(sock: str) -> tuple[dict[str, int], dict[str, int]]:
    """The daemon's own counts: (metric, status document), zero counts left out."""
    _code, status = backupctl_json("--socket", sock, "status")
    with urllib.request.urlopen(
        f"http://{status['daemon']['metrics_address']}/metrics", timeout=10
    ) as response:
        lines = response.read().decode().splitlines()
    metric = {}
    for line in lines:
        if line.startswith("backupd_repository_requests_total{"):
            op = line.split('op="', 1)[1].split('"', 1)[0]
            if count := int(float(line.rsplit(" ", 1)[1])):
                metric[op] = count
    return metric, status["storage"]["requests"]


Proxied = tuple[Any, str, DelayingProxy]  # (boto3 S3 client on moto, bucket, counting proxy)


@pytest.fixture
def proxied(moto: MotoServer) -> Iterator[Proxied]:
    """A fresh bucket on moto, reached through a proxy that counts the S3 requests."""
    bucket = f"costs-{random.randrange(1 << 30)}"
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    proxy = DelayingProxy(moto.port).start()
    try:
        yield s3, bucket, proxy
    finally:
        proxy.stop()


def s3_config(base: dict[str, Any], proxied: Proxied, flush_seconds: float) -> dict[str, Any]:
    _s3, bucket, proxy = proxied
    base["storage"] = {
        "url": f"s3://{bucket}/archive",
        "endpoint_url": proxy.url,
        "region": "us-east-1",
    }
    base["binlog"] = {"flush_seconds": flush_seconds}
    return base


@pytest.mark.parametrize("flush_seconds", [1.0, 4.0])
def test_requests_per_flush_and_idle_match_the_daemons_count(
    flush_seconds: float,
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
    live_mariadb: MariaDB,
    proxied: Proxied,
) -> None:
    s3, bucket, proxy = proxied
    config = s3_config(base_config, proxied, flush_seconds)
    db = live_mariadb
    db.sql("FLUSH BINARY LOGS")
    daemon = start_daemon(write_config(config))
    daemon.notify.wait_for("READY", "1")
    sock = config["daemon"]["socket"]
    head = db.sql("SHOW MASTER STATUS")[0]
    wait_archived(["--socket", sock], f"{head[0]}:{head[1]}")

    load = measure(proxy, db, LOAD_SECONDS, table="costs.w", interval=0.01)
    head = db.sql("SHOW MASTER STATUS")[0]
    wait_archived(["--socket", sock], f"{head[0]}:{head[1]}")
    idle = measure(proxy, db, IDLE_SECONDS)

    expected_puts = LOAD_SECONDS / flush_seconds
    assert load.commits > 100
    assert 0.6 * expected_puts <= load.requests["PutObject"] <= 1.4 * expected_puts + 1, load
    assert idle.binlog_bytes == 0
    assert "PutObject" not in idle.requests, idle
    assert sum(idle.requests.values()) <= 1, idle  # at most one HeadBucket probe
    assert sum(bucket_sizes(s3, bucket, "archive/binlog/")) < load.binlog_bytes

    # The daemon counts what the endpoint saw (a probe may be in flight: poll briefly).
    seen = dict(proxy.requests)
    deadline = time.monotonic() + 30
    while daemon_requests(sock) != (seen, seen) and time.monotonic() < deadline:
        time.sleep(0.2)  # no event for "the probe's response arrived"
        seen = dict(proxy.requests)
    assert daemon_requests(sock) == (seen, seen)
    text = backupctl("--socket", sock, "status").stdout
    assert f"PutObject {proxy.requests['PutObject']}" in text


def test_compaction_downloads_nothing_the_daemon_just_uploaded(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
    live_mariadb: MariaDB,
    proxied: Proxied,
) -> None:
    """A closed file's one-second segments are joined from memory, not GET back from S3."""
    s3, bucket, proxy = proxied
    config = s3_config(base_config, proxied, 0.2)
    db = live_mariadb
    db.sql("FLUSH BINARY LOGS")
    closing = str(db.sql("SHOW MASTER STATUS")[0][0])
    daemon = start_daemon(write_config(config))
    daemon.notify.wait_for("READY", "1")
    measure(proxy, db, 2.0, table="costs.c", interval=0.01)  # many segments in `closing`
    db.sql("FLUSH BINARY LOGS")
    head = db.sql("SHOW MASTER STATUS")[0]
    wait_archived(["--socket", config["daemon"]["socket"]], f"{head[0]}:{head[1]}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # compaction has no event a test can wait on
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="archive/binlog/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        if any(k.endswith(f"/{closing}/manifest.json") for k in keys):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"{closing} was not compacted")
    manifest_key = next(k for k in keys if k.endswith(f"/{closing}/manifest.json"))
    replaced = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert len(replaced["replaced"]) > 5, replaced  # many segments became one object
    # The only GETs are of the timeline's history object (once for the start-up read, once
    # for the archiver's reader, which keeps it), never of the segments compaction joined.
    assert proxy.requests["GetObject"] <= 2, dict(proxy.requests)
