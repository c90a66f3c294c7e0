"""EBS drills on the host itself, against moto, with a loop device as the attached volume.

The set is a real one: a local-provider snapshot of the bed's MariaDB taken under the
archive, re-recorded as an EBS set whose volume snapshot is a moto snapshot. moto attaches
nothing, so `AttachedDevices` plays EC2 + udev: when a drill volume is attached it attaches a
loop device holding the set's image and links it at the NVMe name under `device_links`; when
EC2 detaches the volume it detaches the loop device.

A whole drill must leave nothing: no drill volume or attachment in moto, no mount, no loop
device, no scratch server, no record. A daemon killed mid-drill (volume attached, mounted,
scratch server running) leaves them, and the restarted daemon removes them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from backupd.snapshot.catalog import COMPLETED, SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.ebs import NVME_PREFIX
from backupd.storage.filestore import FileStore
from tests.clients import BIN_DIR, backupctl, backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived
from tests.integration.test_restore import StartDaemon, checksums, mine, record_instant
from tests.integration.test_snapshot_ebs import instance_with_volumes
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.integration.test_snapshot_schedule import scrape
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import MotoServer
from tests.testbed.util import run, wait_until

pytestmark = pytest.mark.integration
REGION = "us-east-1"
DRILL_TAG = "backupd:drill"


class AttachedDevices:
    """EC2 + udev for moto: an attached drill volume becomes a loop device with the image of
    its snapshot, linked at `nvme-Amazon_Elastic_Block_Store_vol<id>`; detached, it goes."""

    def __init__(self, ec2: Any, links: Path, images: dict[str, Path], work: Path) -> None:
        self.ec2, self.links, self.images, self.work = ec2, links, images, work
        self.loops: dict[str, str] = {}  # volume id -> loop device
        self.seen: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> AttachedDevices:
        self.links.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)
        for volume in list(self.loops):
            self._detach(volume)

    def _watch(self) -> None:
        while not self.stopping.wait(0.1):  # EC2 has no event to subscribe to: ask it
            try:
                self._step()
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.error = exc
                return

    def _step(self) -> None:
        attached = {}
        for volume in self.ec2.describe_volumes()["Volumes"]:
            tags = {t["Key"]: t["Value"] for t in volume.get("Tags", [])}
            if DRILL_TAG in tags and volume.get("Attachments"):
                attached[volume["VolumeId"]] = volume["SnapshotId"]
        for volume, snapshot in attached.items():
            if volume not in self.loops:
                self._attach(volume, snapshot)
        for volume in set(self.loops) - set(attached):
            self._detach(volume)

    def _attach(self, volume: str, snapshot: str) -> None:
        image = self.work / f"{volume}.img"
        run("cp", "--sparse=always", str(self.images[snapshot]), str(image))
        device = run("losetup", "--find", "--show", str(image)).stdout.strip()
        self.loops[volume] = device
        self.seen.add(volume)
        (self.links / f"{NVME_PREFIX}{volume.removeprefix('vol-')}").symlink_to(device)

    def _detach(self, volume: str) -> None:
        (self.links / f"{NVME_PREFIX}{volume.removeprefix('vol-')}").unlink(missing_ok=True)
        run("losetup", "-d", self.loops.pop(volume), check=False)
        (self.work / f"{volume}.img").unlink(missing_ok=True)


def drill_volumes(ec2: Any) -> list[str]:
    found = ec2.describe_volumes()["Volumes"]
    return [v["VolumeId"] for v in found if DRILL_TAG in {t["Key"] for t in v.get("Tags", [])}]


def attached_volumes(ec2: Any, instance: str) -> list[str]:
    filters = [{"Name": "attachment.instance-id", "Values": [instance]}]
    return sorted(v["VolumeId"] for v in ec2.describe_volumes(Filters=filters)["Volumes"])


def scratch_servers(root: Path) -> list[int]:
    """This test's scratch servers: a drill's defaults file (backupd-drill-*) and a working
    directory (the restored datadir) under `root`; other sessions' drills are not ours."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if any(a.startswith(b"--defaults-file=") and b"/backupd-drill-" in a for a in argv) and (
            cwd.startswith(str(root))
        ):
            found.append(int(proc.name))
    return found


def mounts_under(*roots: Path) -> list[str]:
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [p for p in points if any(p.startswith(str(root)) for root in roots)]


@pytest.fixture
def ebs_set(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    live_mariadb: MariaDB,
    moto: MotoServer,
    workdir: Path,
) -> Iterator[dict[str, Any]]:
    """A consistent set of the bed's data, recorded as an EBS set on a moto instance; the
    archive beyond it; the config for drills (device links in the work dir)."""
    db = live_mariadb
    schema = f"ebsdrill_{uuid.uuid4().hex[:8]}"
    config = binlog_config(snap_config)
    daemon = start_daemon(write_config(config, "local.toml"))
    sock = config["daemon"]["socket"]
    db.sql(f"CREATE DATABASE {schema}")
    db.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    record = SnapshotSet.from_dict(take(sock))
    assert record.state == COMPLETED
    db.sql(f"INSERT INTO {schema}.t VALUES (1, 'after the snapshot'), (2, 'replayed')")
    instant = record_instant(db, schema)
    wait_archived(sock, db)
    daemon.stop()

    ec2: Any = boto3.client("ec2", endpoint_url=moto.url, region_name=REGION)
    instance = instance_with_volumes(moto.url)
    snapshot = ec2.create_snapshot(VolumeId=instance["data"])["SnapshotId"]
    (local,) = record.volumes
    image = Path(config["snapshot"]["local"]["directory"]) / local.snapshot_id
    ebs = record.with_(
        provider="ebs",
        volumes=[VolumeSnapshot(local.mount, instance["data"], snapshot, COMPLETED)],
    )
    FileStore(workdir / "repo").put(ebs.key, ebs.to_json())
    config["snapshot"].update(provider="ebs")
    config["snapshot"]["ebs"] = {
        "region": REGION,
        "endpoint_url": moto.url,
        "instance_id": instance["id"],
        "volumes": [instance["data"]],
        "device_links": str(workdir / "by-id"),
    }
    devices = AttachedDevices(ec2, workdir / "by-id", {snapshot: image}, workdir)
    with devices:
        yield {
            "config": config, "path": write_config(config), "ec2": ec2, "devices": devices,
            "instance": instance, "instant": instant, "schema": schema, "db": db,
            "attached": attached_volumes(ec2, instance["id"]),
        }  # fmt: skip
    for pid in scratch_servers(workdir):  # a failed test must not leave a server running
        os.kill(pid, signal.SIGKILL)


def assert_nothing_left(bed: dict[str, Any], workdir: Path) -> None:
    assert drill_volumes(bed["ec2"]) == []
    assert attached_volumes(bed["ec2"], bed["instance"]["id"]) == bed["attached"]
    assert bed["devices"].loops == {}, "a drill volume is still attached (its loop device too)"
    assert mounts_under(workdir) == []
    assert scratch_servers(workdir) == []
    assert not (workdir / "state" / "drill" / "resources.json").exists()
    assert not (workdir / "cli-drill" / "resources.json").exists()
    losetup = run("losetup", "-a").stdout
    assert "vol-" not in losetup, losetup


def test_ebs_drill_restores_proves_and_leaves_nothing(
    ebs_set: dict[str, Any], workdir: Path
) -> None:
    assert ebs_set["devices"].error is None
    result = backupctl(
        "--config", str(ebs_set["path"]), "--json", "drill", "--to", "latest",
        "--work-dir", str(workdir / "cli-drill"), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    instant = ebs_set["instant"]
    assert doc["snapshot"]["provider"] == "ebs"
    assert doc["replay"]["server_gtid"] == instant.gtid
    assert mine(doc["tables"], ebs_set["schema"]) == instant.checksums
    assert all(t["check"] == "OK" for t in doc["tables"])
    assert len(ebs_set["devices"].seen) == 1  # one volume was created, attached and used
    assert ebs_set["devices"].error is None
    assert_nothing_left(ebs_set, workdir)
    assert checksums(ebs_set["db"], ebs_set["schema"]) == instant.checksums  # live untouched


def test_daemon_killed_mid_drill_cleans_up_at_restart(
    ebs_set: dict[str, Any], workdir: Path, start_daemon: StartDaemon
) -> None:
    """`backupctl drill` asks the running daemon: one drill passes and lands in the daemon's
    metrics; in the next the daemon is SIGKILLed with the volume attached and mounted and the
    scratch server up; the restarted daemon removes all of it."""
    daemon = start_daemon(ebs_set["path"])
    code, doc = backupctl_json("--config", str(ebs_set["path"]), "drill", "--to", "latest")
    assert code == 0 and doc["via"] == "daemon" and doc["result"] == "success", doc
    assert mine(doc["tables"], ebs_set["schema"]) == ebs_set["instant"].checksums
    sock = ebs_set["config"]["daemon"]["socket"]
    samples = scrape(backupctl_json("--socket", sock, "status")[1]["daemon"]["metrics_address"])
    assert samples['backupd_drills_total{result="success"}'] == 1
    assert samples["backupd_drill_last_success_timestamp_seconds"] >= doc["started_at"]
    assert_nothing_left(ebs_set, workdir)
    asking = subprocess.Popen(
        [str(BIN_DIR / "backupctl"), "--config", str(ebs_set["path"]), "--json", "drill",
         "--to", "latest"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: bool(scratch_servers(workdir)), 120, "the drill's scratch server", poll=0.1
        )
        assert drill_volumes(ebs_set["ec2"]) and mounts_under(workdir / "state")
        daemon.signal(signal.SIGKILL)
        asking.wait(30)
    finally:
        if asking.poll() is None:
            asking.kill()
    assert asking.returncode == 3, asking.communicate()  # the daemon went away
    assert (workdir / "state" / "drill" / "resources.json").exists()
    assert scratch_servers(workdir) and drill_volumes(ebs_set["ec2"])  # left by the kill

    start_daemon(ebs_set["path"])
    wait_until(
        lambda: not drill_volumes(ebs_set["ec2"]) and not scratch_servers(workdir)
        and not (workdir / "state" / "drill" / "resources.json").exists(),
        120, "the restarted daemon's clean-up", poll=0.2,
    )  # fmt: skip
    wait_until(lambda: not ebs_set["devices"].loops, 10, "the loop device to go", poll=0.1)
    assert_nothing_left(ebs_set, workdir)
    done = backupctl("--config", str(ebs_set["path"]), "drill", "--clean-up")
    assert done.returncode == 0 and "nothing to clean" in done.stdout, done
    shutil.rmtree(workdir / "state" / "drill", ignore_errors=True)
