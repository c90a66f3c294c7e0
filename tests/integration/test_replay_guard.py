"""`restore replay` refuses the server backupd protects, and has no default port.

Pointed at production (a copied command, a forgotten `--target-host`), a replay would apply
archived transactions on top of live data. The guard runs before anything is planned or
fetched, so it is tested with an empty repository.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration


def replay(config: str, *where: str) -> tuple[int, dict[str, Any]]:
    return backupctl_json("--config", config, "restore", "replay", "--to", "latest", *where)


def test_replay_refuses_the_protected_server_and_needs_a_port(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    live_mariadb: MariaDB,
    restore_target: MariaDB,
) -> None:
    db = live_mariadb
    config = str(write_config({"storage": base_config["storage"], "mysql": base_config["mysql"]}))
    before = db.sql("SELECT @@gtid_binlog_pos")[0][0]

    code, doc = replay(config, "--target-socket", db.socket)
    assert code != 0 and doc["error"]["code"] == "protected_server", doc
    assert "socket" in doc["error"]["message"]

    code, doc = replay(
        config, "--target-host", "127.0.0.1", "--target-port", str(db.port),
        "--target-option-file", str(db.option_file),
    )  # fmt: skip
    assert code != 0 and doc["error"]["code"] == "protected_server", doc
    assert "datadir" in doc["error"]["message"]
    assert db.sql("SELECT @@gtid_binlog_pos")[0][0] == before  # nothing was applied

    code, doc = replay(config, "--target-host", "127.0.0.1")
    assert code == 2 and "--target-port" in doc["error"]["message"], doc

    code, doc = replay(
        config, "--target-socket", restore_target.socket, "--target-user", "root"
    )  # another server: not refused as protected (it fails later: nothing archived)
    assert doc.get("error", {}).get("code") != "protected_server", doc
