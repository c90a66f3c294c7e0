"""The change index worker on the real bed: a process of its own session on idle CPU time
(nice 10 once lifted), lifted when a segment waits longer than the flush interval (here the
worker is stopped meanwhile, so they wait), dropped back once level; the lag gauge shows
it, and the index it wrote answers `find`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients import backupctl
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import (
    binlog_config,
    metric,
    metrics_text,
    wait_archived,
    wait_for,
)
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration


def worker_of(daemon: DaemonProcess) -> int | None:
    """The pid of the daemon's change index worker (its child running index_worker)."""
    assert daemon.process is not None, "the daemon was never started"
    for children in Path(f"/proc/{daemon.process.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"backupd.binlog.index_worker" in cmdline:
                return int(pid)
    return None


def lag_seconds(sock: str) -> float:
    return metric(metrics_text(sock), "backupd_binlog_index_lag_seconds")


def test_the_worker_takes_idle_time_and_is_lifted_when_behind(
    live_mariadb: MariaDB,
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    db = live_mariadb
    # A segment that waits longer than half a second for its index counts as behind. The
    # worker is stopped (SIGSTOP) while a bulk write is archived, so its segments wait for
    # sure; once it runs again it catches up and is dropped back to idle time.
    config = binlog_config(
        base_config,
        index_flush_seconds=0.5,
        segment_max_bytes=1 << 20,
        spool_max_bytes=1 << 30,  # the session server's older binlogs fit (no pressure)
    )
    sock = str(config["daemon"]["socket"])
    daemon = start_daemon(write_config(config))
    worker = wait_for(lambda: worker_of(daemon), "the binlog service to start its worker")
    assert os.getsid(worker) == worker  # its own session (and autogroup)
    assert os.sched_getscheduler(worker) == os.SCHED_IDLE
    assert os.getpriority(os.PRIO_PROCESS, worker) == 10
    wait_archived(sock, db)  # what earlier tests left on the server, archived and indexed
    wait_for(lambda: lag_seconds(sock) == 0.0, "the backlog to be indexed", 120)
    log = daemon.log_path

    def logged(text: str) -> bool:
        return text in log.read_text()

    assert not logged("worker lifted to nice 10")
    db.sql("CREATE DATABASE IF NOT EXISTS idlebed")
    db.sql("CREATE OR REPLACE TABLE idlebed.t (id INT PRIMARY KEY, v VARCHAR(200))")
    os.kill(worker, signal.SIGSTOP)
    try:
        db.sql(
            "INSERT INTO idlebed.t SELECT seq, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2)) "
            "FROM idlebed.seq_1_to_100000"
        )
        wait_archived(sock, db)  # archiving never waits for the index
        wait_for(lambda: logged("worker lifted to nice 10"), "the worker to be lifted", 60)
        assert os.sched_getscheduler(worker) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, worker) == 10  # nice 10, never above
        assert lag_seconds(sock) >= 0.5
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: logged("worker back to idle time"), "the worker to catch up", 120)
    assert not logged("cannot change the change index worker's priority")
    assert not logged("left unindexed") and not logged("not indexed")
    wait_for(lambda: lag_seconds(sock) == 0.0, "the index lag to fall to 0", 60)
    assert worker_of(daemon) == worker  # the same worker, back on idle time
    assert os.sched_getscheduler(worker) == os.SCHED_IDLE

    db.sql("FLUSH BINARY LOGS")  # the file closes: its indexes are stored now
    wait_archived(sock, db)
    started = time.monotonic()

    def bulk_found() -> list[dict[str, Any]]:
        """The bulk insert, once find searched every segment (no warning)."""
        found = backupctl("--config", str(daemon.config_path), "--json", "find", "--table",
                          "idlebed.t", "--op", "insert")  # fmt: skip
        assert found.returncode == 0, found.stdout + found.stderr
        result: list[dict[str, Any]] = json.loads(found.stdout)
        return [item for item in result if item["rows"] == 100000] if not found.stderr else []

    assert wait_for(bulk_found, "find to list the bulk insert", 60), time.monotonic() - started
