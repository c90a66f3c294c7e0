"""Notifications from the real daemon: a local-provider snapshot on the bed runs `on_success`
with the event in its environment, and a notifier that hangs blocks neither the next snapshot
nor the next notification (it is killed at `timeout_seconds`)."""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_local import thawed  # noqa: F401
from tests.testbed.daemon import DaemonProcess
from tests.testbed.loopfs import LoopFilesystem

pytestmark = pytest.mark.integration


def read_fifo(fifo: Path, timeout: float = 120) -> dict[str, str]:
    """The environment a notifier wrote into `fifo`: waits for the writer, no polling."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(fifo.read_text().splitlines()))
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY))  # release the reader, then fail
        reader.join()
        raise AssertionError("no notifier wrote its environment")
    return dict(line.partition("=")[::2] for line in lines)


def take(sock: str) -> dict[str, Any]:
    code, record = backupctl_json("--socket", sock, "snapshot", "--wait")
    assert code == 0 and record["state"] == "completed", record
    return record


def test_snapshot_runs_on_success_and_a_hanging_notifier_blocks_nothing(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
    thawed: LoopFilesystem,  # noqa: F811
    workdir: Path,
) -> None:
    fifo = workdir / "events.fifo"
    os.mkfifo(fifo)
    notifier = workdir / "notify.sh"
    # Writes its environment, then hangs until the daemon kills it.
    notifier.write_text('#!/bin/sh\nenv > "$1"\necho "notified $BACKUPD_SET_ID"\nexec sleep 300\n')
    notifier.chmod(0o755)
    config = base_config
    config["snapshot"] |= {"mounts": [str(thawed.mount_point)], "lock_timeout_seconds": 2.0}
    config["notify"] = {"on_success": [str(notifier), str(fifo)], "timeout_seconds": 3.0}
    daemon = start_daemon(write_config(config))
    daemon.notify.wait_for("READY", "1")
    sock = config["daemon"]["socket"]

    first = take(sock)
    env = read_fifo(fifo)
    assert env["BACKUPD_EVENT"] == "snapshot"
    assert env["BACKUPD_RESULT"] == "success"
    assert env["BACKUPD_SET_ID"] == first["set_id"]
    assert env["BACKUPD_TRIGGER"] == "manual"
    assert env["BACKUPD_ERROR"] == ""
    assert env["BACKUPD_MESSAGE"] == f"snapshot {first['set_id']} completed"

    # The first notifier now hangs; the daemon takes the next snapshot regardless.
    second = take(sock)
    assert read_fifo(fifo)["BACKUPD_SET_ID"] == second["set_id"]
    log = daemon.log()
    assert f"notified {first['set_id']}" in log
    assert "outcome=timeout" in log

    _code, status = backupctl_json("--socket", sock, "status")
    with urllib.request.urlopen(
        f"http://{status['daemon']['metrics_address']}/metrics", timeout=10
    ) as response:
        metrics = response.read().decode()
    assert 'backupd_notifications_total{result="timeout"} 1.0' in metrics
