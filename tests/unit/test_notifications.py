"""Notifications: the environment, real notifier processes (ok, failing, hanging), a queue
that never blocks, and alarms that notify once when they appear and once when they clear."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from backupd.config import Config, NotifySection
from backupd.notifications import AlarmWatcher, Event, Notifications, run_notifier


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "notify.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_event_environment() -> None:
    event = Event("snapshot", "failed", "snapshot s1 failed: boom", set_id="s1", error="boom",
                  extra={"trigger": "schedule"}, at=0.0)  # fmt: skip
    env = event.environment()
    assert env["BACKUPD_EVENT"] == "snapshot"
    assert env["BACKUPD_RESULT"] == "failed"
    assert env["BACKUPD_SET_ID"] == "s1"
    assert env["BACKUPD_ERROR"] == "boom"
    assert env["BACKUPD_TRIGGER"] == "schedule"
    assert env["BACKUPD_TIME"] == "1970-01-01T00:00:00Z"
    assert not event.ok and Event("drill", "success", "ok").ok


def test_a_notifier_gets_the_event_and_its_output_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "env"
    section = NotifySection(on_success=[script(tmp_path, f'env > {out}; echo sent "$1"'), "x"])
    registry = CollectorRegistry()
    notifications = Notifications(section, registry)
    outcome = notifications.deliver(Event("snapshot", "success", "done", set_id="s2"))
    assert outcome is not None and outcome.result == "ok"
    assert outcome.output == "sent x"
    assert "BACKUPD_SET_ID=s2" in out.read_text().splitlines()
    assert "PATH=" + os.environ["PATH"] in out.read_text().splitlines()
    assert registry.get_sample_value("backupd_notifications_total", {"result": "ok"}) == 1
    # A failure event with no on_failure command runs nothing.
    assert notifications.deliver(Event("snapshot", "failed", "no")) is None


def test_failing_missing_and_hanging_notifiers_are_contained(tmp_path: Path) -> None:
    failing = run_notifier([script(tmp_path, "echo nope >&2; exit 3")], {}, 10)
    assert (failing.result, failing.returncode, failing.output) == ("failed", 3, "nope")
    missing = run_notifier([str(tmp_path / "no-such-command")], {}, 10)
    assert missing.result == "error" and "No such file" in missing.output
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    hanging = run_notifier([script(tmp_path, f"sleep 300 & echo $! > {pid_file}; wait")], {}, 0.5)
    assert hanging.result == "timeout"
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # the whole process group was killed
        for _ in range(100):
            os.kill(child, 0)
            time.sleep(0.05)  # reaping by init: no event to await for a foreign process


def test_publish_never_blocks_and_counts_what_it_drops() -> None:
    registry = CollectorRegistry()
    notifications = Notifications(NotifySection(), registry)  # worker not started
    started = time.monotonic()
    for n in range(100):
        notifications.publish(Event("snapshot", "success", f"run {n}"))
    assert time.monotonic() - started < 1
    assert registry.get_sample_value("backupd_notifications_total", {"result": "dropped"}) == 36


def test_worker_delivers_in_order_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "log"
    section = NotifySection(on_failure=[script(tmp_path, f'echo "$BACKUPD_MESSAGE" >> {out}')])
    notifications = Notifications(section, CollectorRegistry())
    notifications.start()
    for n in range(3):
        notifications.publish(Event("drill", "failed", f"drill {n} failed"))
    notifications.stop(timeout=30)
    assert out.read_text().splitlines() == ["drill 0 failed", "drill 1 failed", "drill 2 failed"]


def test_alarm_watcher_holds_alarms_and_reports_gaps_at_once() -> None:
    watcher = AlarmWatcher(hold=60)
    gap = "binlog gap (purged before archived): mysql-bin.000001:4 .. mysql-bin.000002:4"
    upload = "binlog upload failing (spooling locally): timeout"
    assert [e.event for e in watcher.changes([gap, upload], now=0)] == ["binlog_gap"]
    assert watcher.changes([gap, upload], now=30) == []
    fired = watcher.changes([gap, upload.replace("timeout", "503")], now=61)
    assert [(e.event, e.result) for e in fired] == [("alarm", "firing")]
    assert "503" in fired[0].error
    assert watcher.changes([gap], now=70) == []  # the gap is still there
    cleared = watcher.changes([], now=80)
    assert [(e.event, e.ok) for e in cleared] == [("alarm_cleared", True)]
    # A blip shorter than the hold never notifies.
    assert watcher.changes(["database unreachable: gone"], now=100) == []
    assert watcher.changes([], now=110) == []


def test_config_requires_an_absolute_command() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        Config.model_validate({"notify": {"on_failure": ["mail", "-s", "x"]}})
    assert Config.model_validate({"notify": {"on_success": ["/bin/true"]}}).notify.on_success


def test_every_binlog_gap_notifies_once_even_while_an_earlier_one_stands() -> None:
    watcher = AlarmWatcher(hold=60)
    first = "binlog gap (purged before archived): mysql-bin.000003:120 .. mysql-bin.000005:0"
    second = "binlog gap (purged before archived): mysql-bin.000009:4 .. mysql-bin.000011:0"
    assert [e.message for e in watcher.changes([first], 0.0)] == [first]
    assert [e.message for e in watcher.changes([first, second], 1.0)] == [second]
    assert watcher.changes([first, second], 2.0) == []
