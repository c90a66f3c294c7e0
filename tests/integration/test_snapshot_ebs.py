"""The EBS provider against moto (EC2 in server mode, reached by endpoint_url): one
CreateSnapshots call while frozen, tags, the catalog record, the watchdog under a slow
endpoint, and a failed freeze that aborts the run."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from backupd.config import EbsSection
from backupd.control.client import ControlClient
from backupd.snapshot.catalog import SnapshotSet
from backupd.snapshot.providers.ebs import EbsProvider
from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_local import take, writable_within
from tests.testbed.daemon import DaemonProcess
from tests.testbed.imds import TOKEN, ImdsStub
from tests.testbed.loopfs import LoopFilesystem
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import MotoServer
from tests.testbed.proxy import DelayingProxy
from tests.testbed.util import run
from tests.testbed.writer import Writer

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
REGION = "us-east-1"


def ec2(url: str) -> Any:
    return boto3.client("ec2", endpoint_url=url, region_name=REGION)


@pytest.fixture
def instance(moto: MotoServer) -> dict[str, Any]:
    """An instance with two data volumes attached: only `data` is configured."""
    return instance_with_volumes(moto.url)


def instance_with_volumes(url: str) -> dict[str, Any]:
    """A moto instance with volumes `data` (/dev/sdf) and `other` (/dev/sdg) attached."""
    client = ec2(url)
    image = client.describe_images()["Images"][0]["ImageId"]
    inst = client.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    zone = inst["Placement"]["AvailabilityZone"]
    volumes = {}
    for name, device in (("data", "/dev/sdf"), ("other", "/dev/sdg")):
        vol = client.create_volume(Size=8, AvailabilityZone=zone)["VolumeId"]
        client.attach_volume(VolumeId=vol, InstanceId=inst["InstanceId"], Device=device)
        volumes[name] = vol
    return {"id": inst["InstanceId"], **volumes}


@pytest.fixture
def ebs_config(
    base_config: dict[str, Any], data_fs: LoopFilesystem, moto: MotoServer, instance: Any
) -> Iterator[dict[str, Any]]:
    base_config["snapshot"].update(
        {
            "provider": "ebs",
            "mounts": [str(data_fs.mount_point)],
            "lock_timeout_seconds": 2.0,
            "max_freeze_seconds": 30.0,
            "ebs": {
                "region": REGION,
                "endpoint_url": moto.url,
                "instance_id": instance["id"],
                "volumes": [instance["data"]],
                "tags": {"team": "db"},
            },
        }
    )
    try:
        yield base_config
    finally:
        data_fs.thaw()


def set_snapshots(url: str, set_id: str) -> list[dict[str, Any]]:
    answer = ec2(url).describe_snapshots(
        Filters=[{"Name": "tag:backupd:set-id", "Values": [set_id]}]
    )
    return list(answer["Snapshots"])


def test_ebs_snapshot_set_is_tagged_and_recorded(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    instance: dict[str, Any],
) -> None:
    start_daemon(write_config(ebs_config))
    sock = ebs_config["daemon"]["socket"]
    record = take(sock)
    assert record["state"] == "completed", record
    (volume,) = record["volumes"]
    assert volume["volume"] == instance["data"]
    assert volume["method"] == "create-snapshots"  # one CreateSnapshots call for the set
    live = ec2(moto.url).describe_volumes(VolumeIds=[instance["data"]])["Volumes"][0]
    assert (volume["volume_type"], volume["size_gib"]) == (live["VolumeType"], 8)  # restore: same
    snaps = set_snapshots(moto.url, record["set_id"])
    assert [s["VolumeId"] for s in snaps] == [instance["data"]]  # `other` was not kept
    tags = {t["Key"]: t["Value"] for t in snaps[0]["Tags"]}
    assert tags["backupd:binlog-coordinate"] == record["coordinate"]
    assert tags["backupd:gtid"] == record["gtid"]
    assert tags["backupd:consistency"] == "application"
    assert tags["backupd:owner"] == record["owner"] and tags["backupd:host"] == record["host"]
    assert tags["backupd:version"] == record["version"] and tags["team"] == "db"
    assert tags["backupd:trigger"] == record["trigger"] == "manual"
    _code, listing = backupctl_json("--socket", sock, "snapshots")
    (listed,) = [s for s in listing["snapshots"] if s["set_id"] == record["set_id"]]
    assert listed["provider"] == "ebs" and listed["coordinate"] == record["coordinate"]


def test_sigkill_while_frozen_thaws_at_once(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    data_fs: LoopFilesystem,
) -> None:
    proxy = DelayingProxy(moto.port, b"CreateSnapshots", delay=120).start()
    ebs_config["snapshot"]["ebs"]["endpoint_url"] = proxy.url
    try:
        daemon = start_daemon(write_config(ebs_config))
        code, answer = backupctl_json("--socket", ebs_config["daemon"]["socket"], "snapshot")
        assert code == 0 and answer["state"] == "running", answer
        assert proxy.seen.wait(30), "CreateSnapshots never reached the endpoint"
        assert not writable_within(data_fs.mount_point, 0.5), "the mount was not frozen"
        daemon.signal(signal.SIGKILL)
        # max_freeze_seconds is 30: thawing within 5 s means the watchdog saw the pipe close.
        assert writable_within(data_fs.mount_point, 5)
    finally:
        proxy.stop()


def test_hung_provider_is_thawed_by_the_clock_and_the_run_fails(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    data_fs: LoopFilesystem,
) -> None:
    proxy = DelayingProxy(moto.port, b"CreateSnapshots", delay=30, hang=True).start()
    ebs_config["snapshot"]["ebs"]["endpoint_url"] = proxy.url
    ebs_config["snapshot"].update({"max_freeze_seconds": 2.0, "lock_attempts": 1})
    try:
        start_daemon(write_config(ebs_config))
        sock = ebs_config["daemon"]["socket"]
        code, answer = backupctl_json("--socket", sock, "snapshot")
        assert code == 0 and proxy.seen.wait(30)
        _code, busy = backupctl_json("--socket", sock, "snapshot")
        assert busy["error"]["code"] == "snapshot_in_progress"
        assert writable_within(data_fs.mount_point, 2.0 + 3)
        record = ControlClient(sock).request(
            "GET", f"/v1/snapshot?set_id={answer['set_id']}&wait=60", timeout=70
        )
        assert record["state"] == "failed" and record["error_code"] == "lock_deadline_exceeded"
        assert "the filesystems thawed" in record["error"]
        assert set_snapshots(moto.url, answer["set_id"]) == []  # discarded: not consistent
    finally:
        proxy.stop()


def snapshot_while_writing(server: MariaDB, sock: str) -> tuple[dict[str, Any], float]:
    """One run while a writer commits every 10 ms: the record and the longest commit."""
    writer = Writer(server, "deadline.commits", interval=0.01).start()
    try:
        writer.wait_for_commits(20)
        record = take(sock)
        writer.wait_for_commits(len(writer.commits) + 20, timeout=10)  # commits flow again
    finally:
        commits = writer.stop()
    return record, max(c.latency for c in commits)


def test_hung_create_snapshots_is_cut_off_at_the_lock_deadline(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    data_fs: LoopFilesystem,
    live_mariadb: MariaDB,
) -> None:
    """CreateSnapshots never answers: commits wait at most the budget (+1 s), the lock is
    released and the mount thawed at the deadline, one retry with a fresh lock, then failed."""
    budget = 2.0
    proxy = DelayingProxy(moto.port, b"Action=CreateSnapshots", delay=60, hang=True).start()
    ebs_config["snapshot"]["ebs"]["endpoint_url"] = proxy.url
    ebs_config["snapshot"].update(
        {"max_freeze_seconds": budget, "lock_attempts": 2, "lock_retry_delay_seconds": 0.5}
    )
    try:
        start_daemon(write_config(ebs_config))
        record, worst = snapshot_while_writing(live_mariadb, ebs_config["daemon"]["socket"])
    finally:
        proxy.stop()
    assert worst < budget + 1, f"a commit waited {worst:.2f}s"
    assert record["state"] == "failed", record
    assert record["error_code"] == "lock_deadline_exceeded", record
    assert "max_freeze_seconds" in record["error"]
    assert record["attempts"] == 2 and proxy.matches == 2  # retried once with a fresh lock
    assert budget - 0.5 < record["lock_seconds"] < budget + 0.5  # released at the deadline
    assert writable_within(data_fs.mount_point, 2)
    live_mariadb.sql("INSERT INTO deadline.commits (at) VALUES (0)")
    assert set_snapshots(moto.url, record["set_id"]) == []


def test_a_hung_pre_freeze_hook_loses_the_lock_at_the_deadline(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    live_mariadb: MariaDB,
) -> None:
    """The hook outlives the budget: the deadline thread KILLs the lock's session at once."""
    budget = 1.5
    ebs_config["snapshot"].update({"max_freeze_seconds": budget, "lock_attempts": 1})
    ebs_config["snapshot"]["hooks"] = {"pre_freeze": ["sleep 5"], "timeout_seconds": 10}
    start_daemon(write_config(ebs_config))
    record, worst = snapshot_while_writing(live_mariadb, ebs_config["daemon"]["socket"])
    assert worst < budget + 1, f"a commit waited {worst:.2f}s"
    assert record["state"] == "failed" and record["attempts"] == 1, record
    assert record["error_code"] == "lock_deadline_exceeded", record
    assert "pre_freeze" in record["error"]
    assert set_snapshots(moto.url, record["set_id"]) == []


def test_freeze_failure_aborts_or_falls_back_to_crash_consistent(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    workdir: Path,
) -> None:
    tmpfs = workdir / f"tmpfs-{uuid.uuid4().hex[:6]}"
    tmpfs.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmpfs))
    try:
        ebs_config["snapshot"]["mounts"] = [str(tmpfs)]  # tmpfs cannot be frozen
        start_daemon(write_config(ebs_config))
        record = take(ebs_config["daemon"]["socket"])
        assert record["state"] == "failed" and record["error_code"] == "freeze_failed"
        assert record["volumes"] == [] and set_snapshots(moto.url, record["set_id"]) == []

        ebs_config["snapshot"]["crash_consistent_fallback"] = True
        ebs_config["daemon"]["socket"] = str(workdir / "run2" / "control.sock")
        start_daemon(write_config(ebs_config, "fallback.toml"))
        record = take(ebs_config["daemon"]["socket"])
        assert record["state"] == "completed" and record["consistency"] == "crash"
        (snap,) = set_snapshots(moto.url, record["set_id"])
        tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
        assert tags["backupd:consistency"] == "crash"
    finally:
        run("umount", str(tmpfs), check=False)


def test_volumes_found_from_nvme_links_and_instance_from_imdsv2(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    data_fs: LoopFilesystem,
    instance: dict[str, Any],
    workdir: Path,
) -> None:
    links = workdir / "by-id"
    links.mkdir()
    serial = instance["data"].replace("-", "")
    (links / f"nvme-Amazon_Elastic_Block_Store_{serial}").symlink_to(data_fs.device)
    (links / f"nvme-Amazon_Elastic_Block_Store_{serial}-part1").symlink_to("/dev/null")
    imds = ImdsStub(instance["id"]).start()
    try:
        ebs = ebs_config["snapshot"]["ebs"]
        ebs.update({"volumes": [], "instance_id": "", "imds_url": imds.url})
        ebs["device_links"] = str(links)
        start_daemon(write_config(ebs_config))
        record = take(ebs_config["daemon"]["socket"])
    finally:
        imds.stop()
    assert record["state"] == "completed", record
    (volume,) = record["volumes"]
    assert volume["volume"] == instance["data"] and volume["method"] == "create-snapshots"
    assert ("PUT", "/latest/api/token", "") in imds.requests
    assert ("GET", "/latest/meta-data/instance-id", TOKEN) in imds.requests


def test_without_imds_one_create_snapshots_covers_both_volumes(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    instance: dict[str, Any],
) -> None:
    """No IMDS, no instance_id: the instance comes from the volumes' attachment."""
    proxy = DelayingProxy(moto.port, b"Action=CreateSnapshot").start()  # counts, no delay
    ebs = ebs_config["snapshot"]["ebs"]
    ebs.update(
        {
            "endpoint_url": proxy.url,
            "instance_id": "",
            "imds_url": "http://127.0.0.1:9",  # nothing listens: no metadata service
            "volumes": [instance["data"], instance["other"]],
        }
    )
    try:
        start_daemon(write_config(ebs_config))
        record = take(ebs_config["daemon"]["socket"])
    finally:
        proxy.stop()
    assert record["state"] == "completed", record
    assert [v["method"] for v in record["volumes"]] == ["create-snapshots"] * 2
    assert proxy.matches == 1  # one CreateSnapshots call, no CreateSnapshot per volume
    snaps = set_snapshots(moto.url, record["set_id"])
    assert sorted(s["VolumeId"] for s in snaps) == sorted([instance["data"], instance["other"]])


def test_copies_to_other_regions_and_pending_sets_resume_after_restart(
    ebs_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    moto: MotoServer,
    instance: dict[str, Any],
) -> None:
    ebs_config["snapshot"]["ebs"]["copy_to_regions"] = ["us-west-2"]
    start_daemon(write_config(ebs_config))
    sock = ebs_config["daemon"]["socket"]
    record = take(sock)
    assert record["state"] == "completed", record
    (volume,) = record["volumes"]
    copy_id = volume["copies"]["us-west-2"]
    west = boto3.client("ec2", endpoint_url=moto.url, region_name="us-west-2")
    (copy,) = west.describe_snapshots(SnapshotIds=[copy_id])["Snapshots"]
    assert {"Key": "backupd:set-id", "Value": record["set_id"]} in copy["Tags"]

    # A daemon that died while its set completed left it pending: the next one finishes it.
    pending = SnapshotSet.from_dict(record).with_(state="pending", completed_at=0.0)
    repo = Path(ebs_config["storage"]["url"].removeprefix("file://"))
    (repo / pending.key).write_bytes(pending.to_json())
    ebs_config["daemon"]["socket"] = sock = sock.replace("control.sock", "second.sock")
    start_daemon(write_config(ebs_config, "second.toml"))
    client = ControlClient(sock)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the resume has no event to await: poll
        again = client.request("GET", f"/v1/snapshot?set_id={record['set_id']}")
        if again["state"] != "pending":
            break
        time.sleep(0.2)
    assert again["state"] == "completed" and again["completed_at"] > 0

    # Delete removes the set's snapshots and their copies, and nothing another owner tagged.
    foreign = ec2(moto.url).create_snapshot(
        VolumeId=instance["data"],
        TagSpecifications=[
            {
                "ResourceType": "snapshot",
                "Tags": [
                    {"Key": "backupd:set-id", "Value": record["set_id"]},
                    {"Key": "backupd:owner", "Value": "another-host"},
                ],
            }
        ],
    )["SnapshotId"]
    provider = EbsProvider(EbsSection(**ebs_config["snapshot"]["ebs"]), record["owner"])
    deleted = provider.delete(SnapshotSet.from_dict(again))
    assert sorted(deleted) == sorted([volume["snapshot_id"], copy_id])
    assert [s["SnapshotId"] for s in set_snapshots(moto.url, record["set_id"])] == [foreign]
    remaining = {s["SnapshotId"] for s in west.describe_snapshots()["Snapshots"]}
    assert copy_id not in remaining
