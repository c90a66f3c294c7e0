"""`restore volumes` for an EBS snapshot set against moto: new tagged volumes from the set's
snapshots, attached where asked; the live volume is left alone. `verify` asks EC2 too."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest

from backupd.snapshot.catalog import COMPLETED, SnapshotSet, VolumeSnapshot
from backupd.storage.filestore import FileStore
from tests.clients import BIN_DIR, backupctl
from tests.conftest import ConfigFactory
from tests.testbed.moto import MotoServer
from tests.testbed.util import wait_until

pytestmark = pytest.mark.integration
REGION = "us-east-1"


def fake_archive(store: FileStore) -> None:
    """One archived segment ending where the set's coordinate is: 'latest' = the set."""
    body = b"\xfebin" + bytes(496)
    digest = hashlib.sha256(body).hexdigest()
    key = f"binlog/7/mysql-bin.000001/000000000000-000000000500_1-1_~_tx_{digest}_{digest}.bin"
    store.put(key, body)


def moto_instance(moto: MotoServer) -> tuple[Any, dict[str, Any], str]:
    """An EC2 client, an instance to attach to, and its zone."""
    ec2: Any = boto3.client("ec2", endpoint_url=moto.url, region_name=REGION)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    return ec2, inst, inst["Placement"]["AvailabilityZone"]


def test_ebs_volumes_are_new_tagged_and_attached(
    moto: MotoServer, workdir: Path, write_config: ConfigFactory
) -> None:
    ec2, inst, zone = moto_instance(moto)
    live = ec2.create_volume(Size=8, AvailabilityZone=zone)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=live)["SnapshotId"]
    store = FileStore(workdir / "repo")
    record = SnapshotSet(
        "20261126T010000Z-abcdef", "ebs", "host", "owner", "0", state=COMPLETED,
        coordinate="mysql-bin.000001:500", gtid="0-7-3", flavor="mariadb",
        server_identity="7", datadir="/data/mysql", log_bin_basename="/data/mysql/binlog/mysql-bin",
        mounts=["/data"], volumes=[VolumeSnapshot("/data", live, snap, COMPLETED)],
        locked_at=1.0, started_at=1.0,
    )  # fmt: skip
    store.put(record.key, record.to_json())
    fake_archive(store)
    config = write_config(
        {
            "storage": {"url": f"file://{workdir / 'repo'}"},
            "snapshot": {"provider": "ebs", "ebs": {"endpoint_url": moto.url, "region": REGION}},
            "daemon": {"state_dir": str(workdir / "state")},
        }
    )
    result = backupctl(
        "--config", str(config), "--json", "restore", "volumes", "--to", "latest",
        "--availability-zone", zone, "--instance-id", inst["InstanceId"], "--device", "/dev/sdh",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (made,) = doc["volumes"]
    assert made["volume_id"] != live and made["snapshot_id"] == snap
    described = ec2.describe_volumes(VolumeIds=[made["volume_id"]])["Volumes"][0]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["backupd:restore-of"] == record.set_id and tags["backupd:owner"]
    assert described["SnapshotId"] == snap and described["AvailabilityZone"] == zone
    assert described["Attachments"][0]["Device"] == "/dev/sdh"
    assert not ec2.describe_volumes(VolumeIds=[live])["Volumes"][0]["Attachments"]
    assert any("/mnt/restore-0/mysql/binlog/" in step for step in doc["steps"])
    assert any("--event-scheduler=OFF" in step for step in doc["steps"])
    restore_record_is_kept(doc, workdir / "state", record)

    check = backupctl("--config", str(config), "--json", "verify")
    assert json.loads(check.stdout)["sets_checked"] == 1
    ec2.delete_snapshot(SnapshotId=snap)
    check = backupctl("--config", str(config), "--json", "verify")
    report = json.loads(check.stdout)
    assert check.returncode == 4
    assert any(snap in p and "missing" in p for p in report["problems"]), report


def restore_record_is_kept(doc: dict[str, Any], state_dir: Path, record: SnapshotSet) -> None:
    """EBS: the record goes to the state directory (default), names the new volumes, and the
    printed replay command names it."""
    kept = doc["record"]
    path = state_dir / "restores" / f"{record.set_id}.json"
    assert kept["path"] == str(path) and json.loads(path.read_text())["gtid"] == record.gtid
    assert kept["volumes"] == doc["volumes"] and kept["provider"] == "ebs"
    assert kept["coordinate"] == "mysql-bin.000001:500" and kept["timeline"] == 0
    assert doc["steps"][-1] == kept["replay_command"]
    command = kept["replay_command"]
    assert f"--record {path} --to latest --target-socket /run/backupd-restore.sock" in command


KEY = "arn:aws:kms:us-east-1:123456789012:key/k1"


def recorded_set(ec2: Any, store: FileStore, zone: str) -> SnapshotSet:
    """A set whose manifest records an encrypted io2 volume, as the EBS provider writes it."""
    live = ec2.create_volume(Size=8, AvailabilityZone=zone)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=live)["SnapshotId"]
    volume = VolumeSnapshot(
        "/data", live, snap, COMPLETED, volume_type="io2", size_gib=20, iops=4000,
        encrypted=True, kms_key_id=KEY,
    )  # fmt: skip
    record = SnapshotSet(
        "20261126T020000Z-fedcba", "ebs", "host", "owner", "0", state=COMPLETED,
        coordinate="mysql-bin.000001:500", server_identity="7", mounts=["/data"],
        volumes=[volume], locked_at=1.0, started_at=1.0,
    )  # fmt: skip
    store.put(record.key, record.to_json())
    fake_archive(store)
    return record


def test_ebs_volumes_are_made_like_the_recorded_ones_and_initialized(
    moto: MotoServer, workdir: Path, write_config: ConfigFactory
) -> None:
    ec2, inst, zone = moto_instance(moto)
    store = FileStore(workdir / "repo")
    record = recorded_set(ec2, store, zone)
    links = workdir / "by-id"
    links.mkdir()
    config = write_config(
        {
            "storage": {"url": f"file://{workdir / 'repo'}"},
            "snapshot": {
                "provider": "ebs",
                "ebs": {"endpoint_url": moto.url, "region": REGION, "device_links": str(links)},
            },
            "daemon": {"state_dir": str(workdir / "state")},  # where restore records go
        }
    )
    base = ("--config", str(config), "--json", "restore", "volumes", "--to", "latest",
            "--availability-zone", zone)  # fmt: skip

    result = backupctl(*base)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (made,) = doc["volumes"]
    described = ec2.describe_volumes(VolumeIds=[made["volume_id"]])["Volumes"][0]
    kind = {k: described.get(k) for k in ("VolumeType", "Size", "Iops", "Encrypted", "KmsKeyId")}
    assert kind == {"VolumeType": "io2", "Size": 20, "Iops": 4000, "Encrypted": True,
                    "KmsKeyId": KEY}  # fmt: skip
    assert made["volume_type"] == "io2" and made["recorded"] is True
    assert doc["warm"] == "lazy" and any("restore lazily" in n for n in doc["notes"])

    result = backupctl(*base, "--volume-type", "gp3", "--throughput", "250", "--iops", "5000")
    assert result.returncode == 0, result.stderr
    (made,) = json.loads(result.stdout)["volumes"]
    described = ec2.describe_volumes(VolumeIds=[made["volume_id"]])["Volumes"][0]
    assert (described["VolumeType"], described["Iops"], described["Size"]) == ("gp3", 5000, 20)

    refused = backupctl(*base, "--volume-type", "st1", "--iops", "500")
    assert refused.returncode == 2 and "--iops applies to" in refused.stderr
    assert len(restores_of(ec2, record.set_id)) == 2  # the refused one made nothing

    # --initialize reads the attached device once: the bed links a file where udev would
    command = [*base, "--instance-id", inst["InstanceId"], "--device", "/dev/sdh", "--initialize"]
    before = set(restores_of(ec2, record.set_id))
    running = subprocess.Popen(
        [str(BIN_DIR / "backupctl"), *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_until(lambda: len(restores_of(ec2, record.set_id)) == 3, 60, "the new volume")
    (new,) = set(restores_of(ec2, record.set_id)) - before
    device = workdir / "device.img"
    device.write_bytes(b"\0" * (3 << 20))
    (links / f"nvme-Amazon_Elastic_Block_Store_vol{new.removeprefix('vol-')}").symlink_to(device)
    out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    doc = json.loads(out)
    (made,) = doc["volumes"]
    assert doc["warm"] == "initialized" and made["initialized_bytes"] == 3 << 20
    assert doc["ready_seconds"] >= made["initialize_seconds"]


def restores_of(ec2: Any, set_id: str) -> list[str]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag:backupd:restore-of", "Values": [set_id]}])
    return [v["VolumeId"] for v in found["Volumes"]]
