"""A first EBS snapshot that outlives `wait_timeout_seconds` (moto completes at once, so the
HTTP proxy reports it `pending` at 42% until released): the set stays pending, is followed up
by the daemon, ends completed and restorable, and no failure is counted."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backupd.control.client import ControlClient
from tests.clients import BIN_DIR, backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_ebs import StartDaemon, ebs_config, instance  # noqa: F401
from tests.integration.test_snapshot_schedule import scrape
from tests.testbed.http_proxy import RewritingProxy
from tests.testbed.moto import MotoServer

pytestmark = pytest.mark.integration


def hold_pending(request: bytes, response: bytes) -> bytes:
    """What EC2 says about a snapshot of a large volume for its first hours."""
    if b"Action=DescribeSnapshots" not in request:
        return response
    return response.replace(b"<status>completed</status>", b"<status>pending</status>").replace(
        b"<progress>100%</progress>", b"<progress>42%</progress>"
    )


@pytest.fixture
def slow_ec2(moto: MotoServer) -> Iterator[RewritingProxy]:
    proxy = RewritingProxy(moto.port).start()
    proxy.rewrites.append(hold_pending)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def pending_sock(
    ebs_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    slow_ec2: RewritingProxy,
) -> str:
    """A daemon whose EBS snapshots stay pending past `wait_timeout_seconds` (1 s)."""
    ebs = ebs_config["snapshot"]["ebs"]
    ebs.update({"endpoint_url": slow_ec2.url, "wait_timeout_seconds": 1, "poll_seconds": 0.3})
    start_daemon(write_config(ebs_config))
    return str(ebs_config["daemon"]["socket"])


def settled(sock: str, set_id: str, timeout: float = 60) -> dict[str, Any]:
    """The set once the daemon's follow-up moved it out of `pending` (no event: poll)."""
    client = ControlClient(sock)
    deadline = time.monotonic() + timeout
    while True:
        record = client.request("GET", f"/v1/snapshot?set_id={set_id}")
        if record["state"] != "pending":
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"set {set_id} still pending after {timeout}s: {record}")
        time.sleep(0.2)


def test_snapshot_pending_past_the_timeout_completes_when_ec2_does(
    ebs_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    slow_ec2: RewritingProxy,
    pending_sock: str,
) -> None:
    sock, ebs = pending_sock, ebs_config["snapshot"]["ebs"]

    code, record = backupctl_json("--socket", sock, "snapshot", "--wait")
    assert code == 4 and record["state"] == "pending", record  # not failed, not restorable yet
    assert record["completed_at"] == 0 and record["error"] == ""
    assert [v["progress"] for v in record["volumes"]] == ["42%"]
    _code, status = backupctl_json("--socket", sock, "status")
    assert [p["set_id"] for p in status["snapshot"]["pending"]] == [record["set_id"]]
    assert (
        f"{record['set_id']} pending (EC2 {ebs['volumes'][0]} 42%)"
        in (status["snapshot"]["summary"])
    )
    assert not any("failed" in w for w in status["warnings"]), status["warnings"]
    samples = scrape(status["daemon"]["metrics_address"])
    assert samples["backupd_snapshot_pending_sets"] == 1
    assert samples['backupd_snapshots_total{result="failed"}'] == 0
    code, _plan = backupctl_json("--config", str(write_config(ebs_config)), "restore", "plan",
                                 "--to", "latest")  # fmt: skip
    assert code == 1  # a pending set is no starting point

    slow_ec2.rewrites.clear()  # EC2 finishes the copy
    done = settled(sock, record["set_id"])
    assert done["state"] == "completed" and done["completed_at"] > 0, done
    assert [v["state"] for v in done["volumes"]] == ["completed"]
    samples = scrape(status["daemon"]["metrics_address"])
    assert samples["backupd_snapshot_pending_sets"] == 0
    assert samples['backupd_snapshots_total{result="completed"}'] == 1
    assert samples['backupd_snapshots_total{result="failed"}'] == 0
    assert samples["backupd_snapshot_last_success_timestamp_seconds"] == done["completed_at"]
    code, plan = backupctl_json("--config", str(write_config(ebs_config)), "restore", "plan",
                                "--to", "latest")  # fmt: skip
    assert code == 0 and plan["snapshot"]["set_id"] == record["set_id"], plan


def test_snapshot_wait_on_a_terminal_shows_ec2_progress(
    ebs_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    slow_ec2: RewritingProxy,
    pending_sock: str,
) -> None:
    sock, ebs = pending_sock, ebs_config["snapshot"]["ebs"]
    controller, terminal = pty.openpty()  # stderr is a TTY: the progress line is drawn there
    try:
        done = subprocess.run(
            [str(BIN_DIR / "backupctl"), "--socket", sock, "snapshot", "--wait", "--timeout", "4"],
            stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=60, check=False,
        )  # fmt: skip
        os.close(terminal)
        shown = b""
        while chunk := _read(controller):
            shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 4, done.stdout  # still pending when --timeout ran out
    assert f"EC2 {ebs['volumes'][0]} 42%".encode() in shown, shown
    assert "pending" in done.stdout and "42%" in done.stdout


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal side is closed and drained
        return b""
