"""The real daemon exports the config values the alert rules divide by, and a reload moves them."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.testbed.daemon import DaemonProcess

pytestmark = pytest.mark.integration


def scrape(socket_path: str) -> dict[str, float]:
    """backupd_* samples without labels, by name, from the daemon's metrics endpoint."""
    _code, status = backupctl_json("--socket", socket_path, "status")
    address = status["daemon"]["metrics_address"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in lines)
        if name.startswith("backupd_") and "{" not in name
    }


def test_gauges_follow_schedule_spool_and_reload(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    config = base_config
    config["snapshot"] |= {"schedule": "0 3 * * *", "jitter_seconds": 600}
    config["binlog"] = {"enabled": False, "spool_max_bytes": 2 * 1024**3}
    config["drill"] = {"schedule": "0 4 * * 1-5"}
    path = write_config(config)
    daemon = start_daemon(path)
    daemon.notify.wait_for("READY", "1")
    sock = config["daemon"]["socket"]
    metrics = scrape(sock)
    assert metrics["backupd_snapshot_expected_interval_seconds"] == 86400 + 600
    assert metrics["backupd_binlog_spool_max_bytes"] == 2 * 1024**3
    assert metrics["backupd_drill_expected_interval_seconds"] == 3 * 86400  # Fri -> Mon

    config["snapshot"] |= {"schedule": "0 * * * *", "jitter_seconds": 0}
    write_config(config)
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for("STATUS", "config reloaded")
    assert scrape(sock)["backupd_snapshot_expected_interval_seconds"] == 3600
