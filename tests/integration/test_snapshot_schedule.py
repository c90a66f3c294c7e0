"""Schedule, catch-up, retention and metrics on the running daemon (local provider)."""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backupd.snapshot.catalog import SnapshotSet
from tests.clients import backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.daemon import DaemonProcess

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]


def repo_of(config: dict[str, Any]) -> Path:
    return Path(config["storage"]["url"].removeprefix("file://"))


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("backupd_") and " " in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_prune_keeps_newest_and_touches_only_owned_sets(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    snap_config["snapshot"]["retention"] = {
        "keep_last": 1, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0,
    }  # fmt: skip
    daemon = start_daemon(write_config(snap_config))
    sock = snap_config["daemon"]["socket"]
    ids = [take(sock)["set_id"] for _ in range(3)]
    foreign = SnapshotSet(
        set_id="20200101T000000Z-abcdef", provider="local", host="other", owner="other-host",
        version="0", state="completed", started_at=1577836800.0,
    )  # fmt: skip
    (repo_of(snap_config) / "snapshots" / f"{foreign.set_id}.json").write_bytes(foreign.to_json())
    images = Path(snap_config["snapshot"]["local"]["directory"])

    code, plan = backupctl_json("--socket", sock, "prune", "--dry-run")
    assert code == 0 and plan["dry_run"] is True
    assert sorted(plan["delete"]) == sorted(ids[:2]) and plan["deleted"] == []
    assert all((images / set_id).is_dir() for set_id in ids)  # dry run: nothing went

    code, done = backupctl_json("--socket", sock, "prune")
    assert code == 0 and sorted(done["deleted"]) == sorted(ids[:2])
    assert [k["set_id"] for k in done["keep"]] == [ids[2]]
    assert not (images / ids[0]).exists() and (images / ids[2]).is_dir()
    (repo_of(snap_config) / "snapshots" / "garbled.json").write_bytes(b"{not json")
    code, listing = backupctl_json("--socket", sock, "snapshots")
    assert code == 0 and {s["set_id"] for s in listing["snapshots"]} == {ids[2], foreign.set_id}
    assert listing["unreadable"][0].startswith("snapshots/garbled.json")

    samples = scrape(backupctl_json("--socket", sock, "status")[1]["daemon"]["metrics_address"])
    assert samples['backupd_snapshots_total{result="completed"}'] == 3
    assert samples["backupd_lock_duration_seconds_count"] == 3
    assert samples["backupd_freeze_duration_seconds_count"] == 3
    assert samples["backupd_snapshot_last_success_timestamp_seconds"] > time.time() - 300
    assert daemon.process is not None and daemon.process.poll() is None


def test_schedule_next_run_and_one_catch_up_after_downtime(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    snap_config["snapshot"].update({"enabled": True, "schedule": "0 0 1 1 *"})
    # The newest recorded run is older than the last scheduled time: the daemon was down.
    old = SnapshotSet(
        set_id="20240101T000000Z-000001", provider="local", host="h", owner="x",
        version="0", state="completed", started_at=1704067200.0,
    )  # fmt: skip
    manifests = repo_of(snap_config) / "snapshots"
    manifests.mkdir(parents=True)
    (manifests / f"{old.set_id}.json").write_bytes(old.to_json())
    start_daemon(write_config(snap_config))
    sock = snap_config["daemon"]["socket"]

    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:  # the catch-up run has no event to await: poll
        status = backupctl_json("--socket", sock, "status")[1]["snapshot"]
        last = status["last"] or {}
        if last.get("set_id") != old.set_id and last.get("state") in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert status["last"]["state"] == "completed", status
    next_new_year = dt.datetime(dt.datetime.now(dt.UTC).year + 1, 1, 1, tzinfo=dt.UTC)
    assert status["next_run_at"] == next_new_year.timestamp()
    address = backupctl_json("--socket", sock, "status")[1]["daemon"]["metrics_address"]
    samples = scrape(address)
    assert samples["backupd_snapshot_next_run_timestamp_seconds"] == next_new_year.timestamp()
    assert samples['backupd_snapshots_total{result="completed"}'] == 1
    _code, listing = backupctl_json("--socket", sock, "snapshots")
    assert len(listing["snapshots"]) == 2  # exactly one catch-up run
    assert listing["next_run_at"] == next_new_year.timestamp()
    text = backupctl("--socket", sock, "status").stdout
    assert "snapshot: last" in text
    assert f"next {next_new_year:%Y-%m-%dT%H:%M:%SZ}" in text
    listing_text = backupctl("--socket", sock, "snapshots").stdout
    assert (
        f"next scheduled run: {next_new_year:%Y-%m-%dT%H:%M:%SZ} ('0 0 1 1 *' UTC)" in listing_text
    )


def test_day_of_month_or_weekday_in_a_time_zone(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
) -> None:
    """crontab(5) on the running daemon: `0 3 1 * 1` is every 1st and every Monday, at
    03:00 in the schedule's zone; the next run is what status and snapshots show."""
    snap_config["snapshot"].update(
        {"enabled": True, "schedule": "0 3 1 * 1", "timezone": "Europe/Berlin"}
    )
    start_daemon(write_config(snap_config))
    sock = snap_config["daemon"]["socket"]
    berlin = ZoneInfo("Europe/Berlin")
    now = dt.datetime.now(berlin)
    day = now.date()
    while True:  # the rule, spelled out: the first 03:00 on a 1st or a Monday still to come
        due = dt.datetime.combine(day, dt.time(3), berlin)
        if (day.day == 1 or day.isoweekday() == 1) and due > now:
            break
        day += dt.timedelta(days=1)
    status = backupctl_json("--socket", sock, "status")[1]["snapshot"]
    assert status["next_run_at"] == due.timestamp(), status
    assert status["timezone"] == "Europe/Berlin"
    _code, listing = backupctl_json("--socket", sock, "snapshots")
    assert listing["next_run_at"] == due.timestamp()
    utc = due.astimezone(dt.UTC)
    assert f"next scheduled run: {utc:%Y-%m-%dT%H:%M:%SZ} ('0 3 1 * 1' Europe/Berlin)" in (
        backupctl("--socket", sock, "snapshots").stdout
    )
