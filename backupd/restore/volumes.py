"""`backupctl restore volumes`: the chosen snapshot set as new volumes, and the steps to use them.

Local provider: the set's images copied (reflinked where possible) into a directory. EBS:
new volumes created from the set's snapshots in an availability zone, tagged as restores,
optionally attached to an instance. Live volumes are never touched: only new ones are made.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from backupd.config import EbsSection
from backupd.errors import ProviderError, UsageError
from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.local import restore_image

RESTORE_TAG = "backupd:restore-of"


@dataclass
class RestoredVolumes:
    set_id: str
    provider: str
    volumes: list[dict[str, str]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "set_id": self.set_id,
            "provider": self.provider,
            "volumes": self.volumes,
            "steps": self.steps,
        }


def server_steps(record: SnapshotSet, mounts: dict[str, str], target: str) -> list[str]:
    """Fix the binlog index, start the server with nothing acting on the world, replay."""
    datadir = _moved(record.datadir, mounts) or "<restored datadir>"
    basename = _moved(record.log_bin_basename, mounts) or "<restored binlog basename>"
    old_dir = str(PurePosixPath(record.log_bin_basename).parent) if record.log_bin_basename else ""
    new_dir = str(PurePosixPath(basename).parent)
    steps = []
    if old_dir and old_dir != new_dir:
        steps.append(f"sed -i 's#^{old_dir}/#{new_dir}/#' {shlex.quote(basename + '.index')}")
    steps += [
        f"mariadbd --datadir={shlex.quote(datadir)} --log-bin={shlex.quote(basename)} "
        "--skip-slave-start --event-scheduler=OFF --skip-networking "
        "--innodb-flush-log-at-trx-commit=2 --sync-binlog=0 "
        "--socket=/run/backupd-restore.sock &   # mysqld on MySQL",
        f"backupctl restore replay --to {shlex.quote(target)} "
        "--target-socket /run/backupd-restore.sock",
    ]
    return steps


def relocate(path: str, mounts: dict[str, Path]) -> Path | None:
    """Where `path` of the original host lives under the restored mounts (mount -> new point)."""
    inside = [m for m in mounts if path and PurePosixPath(path).is_relative_to(PurePosixPath(m))]
    best = max(inside, key=len, default=None)
    if best is None:
        return None
    return mounts[best] / PurePosixPath(path).relative_to(PurePosixPath(best))


def _moved(path: str, mounts: dict[str, str]) -> str:
    found = relocate(path, {mount: Path(point) for mount, point in mounts.items()})
    return str(found) if found is not None else ""


def local_volumes(record: SnapshotSet, directory: str, dest: Path, target: str) -> RestoredVolumes:
    dest.mkdir(parents=True, exist_ok=True)
    result = RestoredVolumes(record.set_id, "local")
    mounts = {}
    for number, volume in enumerate(record.volumes):
        image = dest / f"{record.set_id}-{number}.img"
        if image.exists():
            raise UsageError(f"{image} exists; choose another --dest or remove it")
        method = restore_image(directory, volume, str(image))
        point = dest / f"mnt-{number}"
        mounts[volume.mount] = str(point)
        result.volumes.append({"mount": volume.mount, "image": str(image), "method": method})
        result.steps.append(f"mkdir -p {point} && mount -o loop {image} {point}")
    result.steps += server_steps(record, mounts, target)
    return result


def ebs_volumes(
    record: SnapshotSet,
    section: EbsSection,
    zone: str,
    target: str,
    instance_id: str = "",
    devices: list[str] | None = None,
    client: Any = None,
) -> RestoredVolumes:
    devices = devices or []
    if devices and not instance_id:
        raise UsageError("--device needs --instance-id")
    if devices and len(devices) != len(record.volumes):
        raise UsageError(
            f"set {record.set_id} has {len(record.volumes)} volume(s): give as many --device"
        )
    ec2: Any = client or boto3.client(
        "ec2", region_name=section.region or None, endpoint_url=section.endpoint_url or None
    )
    result = RestoredVolumes(record.set_id, "ebs")
    mounts = {}
    for number, volume in enumerate(record.volumes):
        device = devices[number] if devices else ""
        entry = create_volume(ec2, record, volume, zone, instance_id, device)
        result.volumes.append(entry)
        point = mounts[volume.mount] = f"/mnt/restore-{number}"
        where = device or f"<device of {entry['volume_id']}>"
        result.steps.append(f"mkdir -p {point} && mount {where} {point}   # was {volume.mount}")
    result.steps += server_steps(record, mounts, target)
    return result


def create_volume(
    ec2: Any,
    record: SnapshotSet,
    volume: VolumeSnapshot,
    zone: str,
    instance: str,
    device: str,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, str]:
    """One new volume from one snapshot, tagged as a restore; attached when a device is given.
    `extra_tags` (a drill's run id) are set at creation, like the others."""
    tags = [  # backupd:owner: the IAM policy lets backupd create, attach and delete only these
        {"Key": "backupd:owner", "Value": socket.gethostname()},
        {"Key": RESTORE_TAG, "Value": record.set_id},
        {"Key": "backupd:source-volume", "Value": volume.volume},
        {"Key": "Name", "Value": f"backupd restore {record.set_id} {volume.mount}"},
    ]
    tags += [{"Key": key, "Value": value} for key, value in (extra_tags or {}).items()]
    try:
        made = ec2.create_volume(
            SnapshotId=volume.snapshot_id,
            AvailabilityZone=zone,
            VolumeType="gp3",
            TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
        )
        entry = {
            "mount": volume.mount,
            "snapshot_id": volume.snapshot_id,
            "volume_id": str(made["VolumeId"]),
        }
        if device:
            ec2.get_waiter("volume_available").wait(VolumeIds=[entry["volume_id"]])
            ec2.attach_volume(VolumeId=entry["volume_id"], InstanceId=instance, Device=device)
            entry["device"] = device
    except (BotoCoreError, ClientError) as exc:
        raise ProviderError(message=f"creating a volume from {volume.snapshot_id}: {exc}") from exc
    return entry
