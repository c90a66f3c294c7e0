"""Server settings that put the archive at risk, on the real bed: a MariaDB running with
sync_binlog=0 and binlog_format=STATEMENT shows both risks in `backupctl status` (text and
JSON) and as backupd_server_setting_risk; set back, both clear. Reported, never refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config
from tests.integration.test_snapshot_schedule import scrape
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]


def risk_metrics(doc: dict[str, Any]) -> dict[str, float]:
    samples = scrape(doc["daemon"]["metrics_address"])
    prefix = 'backupd_server_setting_risk{setting="'
    return {k[len(prefix) : -2]: v for k, v in samples.items() if k.startswith(prefix)}


def test_risky_settings_are_reported_in_status_and_metrics(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
) -> None:
    db = live_mariadb
    config = binlog_config(base_config)
    start_daemon(write_config(config))
    sock = config["daemon"]["socket"]
    db.sql("SET GLOBAL sync_binlog = 0")
    db.sql("SET GLOBAL binlog_format = 'STATEMENT'")
    try:
        code, doc = backupctl_json("--socket", sock, "probe")  # re-probe now
        assert code == 4 and doc["healthy"] is False, doc
        risks = {r["setting"]: r for r in doc["database"]["setting_risks"]}
        assert risks["sync_binlog"]["at_risk"] and risks["sync_binlog"]["value"] == "0"
        assert risks["binlog_format"]["at_risk"]
        assert risks["binlog_format"]["value"] == "STATEMENT"
        assert not risks["binlog_checksum"]["at_risk"] and not risks["gtid_mode"]["at_risk"]
        assert any(w.startswith("server setting sync_binlog=0") for w in doc["warnings"])
        assert any("binlog_format is STATEMENT" in w for w in doc["warnings"])
        text = backupctl("--socket", sock, "status")
        assert text.returncode == 4 and "sync_binlog=0" in text.stdout, text.stdout
        metrics = risk_metrics(doc)
        assert metrics["sync_binlog"] == 1 and metrics["binlog_format"] == 1, metrics
        assert metrics["binlog_row_image"] == 0 and metrics["binlog_checksum"] == 0
    finally:
        db.sql("SET GLOBAL sync_binlog = 1")
        db.sql("SET GLOBAL binlog_format = 'ROW'")
    code, doc = backupctl_json("--socket", sock, "probe")
    assert not any(r["at_risk"] for r in doc["database"]["setting_risks"]), doc
    assert risk_metrics(doc)["sync_binlog"] == 0
