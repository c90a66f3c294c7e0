"""EBS drills on the database host itself: the set's snapshots as new volumes attached here.

For each volume of the set: CreateVolume from its snapshot in this instance's availability
zone (tagged `backupd:owner`, `backupd:restore-of` and `backupd:drill=<run id>`), attach at a
free device name, wait for the kernel's device (the NVMe link `nvme-Amazon_Elastic_Block_
Store_vol<id>` under `[snapshot.ebs] device_links`), and mount it at a scratch path under the
drill's work directory. Never a production mount: the scratch path may not be, hold or lie
inside a configured mount, and the device may not be a configured mount's or mounted at all.
Taking down — unmount, detach, delete — runs in `finally`, each step even when one before it
failed; every resource is in the drill's record (drill_resources) before it is created.

The device resolver is the only seam: the links directory. On EC2 udev makes the link; the
test bed (moto attaches nothing) links a loop device holding the snapshot's content there.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from backupd.config import Config
from backupd.errors import DrillFailed
from backupd.restore import blockdev, warmup
from backupd.restore.drill_resources import DRILL_TAG, DrillLedger, remove_volume
from backupd.restore.volume_spec import VolumeOverrides, create_volume_args
from backupd.restore.volumes import create_volume
from backupd.snapshot.catalog import SnapshotSet
from backupd.snapshot.providers.ebs import imds_instance_id

DEVICE_NAMES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")


@dataclass
class EbsDrillHost:
    """This instance as an EBS drill sees it."""

    ec2: Any
    instance_id: str
    zone: str
    links: Path  # where the kernel's NVMe links appear ([snapshot.ebs] device_links)
    protected: list[str] = field(default_factory=list)  # snapshot.mounts: never touched
    device_timeout: float = 300.0
    poll_seconds: float = 2.0

    @classmethod
    def from_config(cls, config: Config, client: Any = None) -> EbsDrillHost:
        section = config.snapshot.ebs
        ec2: Any = client or ec2_client(config)
        instance = section.instance_id
        try:
            if not instance:
                instance = imds_instance_id(section.imds_url)
            found = ec2.describe_instances(InstanceIds=[instance])["Reservations"]
            zone = str(found[0]["Instances"][0]["Placement"]["AvailabilityZone"])
        except (OSError, BotoCoreError, ClientError, LookupError) as exc:
            raise DrillFailed(
                f"this instance or its availability zone is unknown ({exc}); set "
                "snapshot.ebs.instance_id or make IMDS reachable"
            ) from exc
        return cls(ec2, instance, zone, Path(section.device_links), list(config.snapshot.mounts))

    def free_device_name(self, taken: set[str]) -> str:
        answer = self.ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"]
        mappings = answer[0]["Instances"][0].get("BlockDeviceMappings", [])
        used = taken | {str(m["DeviceName"]) for m in mappings}
        for name in DEVICE_NAMES:
            if name not in used and name.replace("/dev/sd", "/dev/xvd") not in used:
                return name
        raise DrillFailed(f"no free device name on {self.instance_id} ({', '.join(used)})")

    def wait_for_device(self, volume_id: str) -> str:
        """The block device EC2 attached, once its NVMe link shows up (ProviderError, which
        the drill reports as failed, when it does not)."""
        link = warmup.device_link(volume_id, str(self.links))
        warmup.wait_for_device(link, self.device_timeout, self.poll_seconds)
        return os.path.realpath(link)


def ec2_client(config: Config) -> Any:
    section = config.snapshot.ebs
    return boto3.client(
        "ec2", region_name=section.region or None, endpoint_url=section.endpoint_url or None
    )


def refuse_production(device: str, point: Path, protected: list[str]) -> None:
    """The scratch mount must not touch a configured mount, by path or by device."""
    scratch = PurePosixPath(point)
    for mount in protected:
        other = PurePosixPath(mount)
        if scratch == other or scratch.is_relative_to(other) or other.is_relative_to(scratch):
            raise DrillFailed(f"scratch path {point} overlaps configured mount {mount}")
    rdev = os.stat(device).st_rdev
    for mount in protected:
        with contextlib.suppress(OSError):
            if os.stat(mount).st_dev == rdev:
                raise DrillFailed(f"{device} is the device of configured mount {mount}")
    number = f"{os.major(rdev)}:{os.minor(rdev)}"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] == number:
            raise DrillFailed(f"{device} is already mounted at {fields[4]}")


@contextlib.contextmanager
def materialised(
    record: SnapshotSet, host: EbsDrillHost, run_dir: Path, ledger: DrillLedger
) -> Iterator[dict[str, Path]]:
    """The set's volumes created, attached and mounted under `run_dir`; mount -> point."""
    made: list[tuple[str, Path]] = []  # (volume id, mount point), in creation order
    taken: set[str] = set()
    tags = {DRILL_TAG: ledger.run_id}
    failed: list[str] = []
    try:
        mounts = {}
        for number, volume in enumerate(record.volumes):
            point = run_dir / f"mnt-{number}"
            spec = create_volume_args(volume, VolumeOverrides())  # the kind it replaces
            entry = create_volume(host.ec2, record, volume, host.zone, "", "", spec, tags)
            volume_id = entry["volume_id"]
            ledger.add("volume", volume_id, instance=host.instance_id)
            made.append((volume_id, point))
            _attach(host, volume_id, taken)
            device = host.wait_for_device(volume_id)
            refuse_production(device, point, host.protected)
            ledger.add("mount", str(point))
            blockdev.mount_device(device, point)
            blockdev.adopt_tree(point)  # the daemon's drills run as `backupd`, not `mysql`
            mounts[volume.mount] = point
        yield mounts
    finally:
        for volume_id, point in reversed(made):
            failed += _take_down(host, ledger, volume_id, point)
    if failed:
        raise DrillFailed("left behind (cleaned at the next start): " + "; ".join(failed))


def _attach(host: EbsDrillHost, volume_id: str, taken: set[str]) -> None:
    waiting = {"Delay": 2, "MaxAttempts": 150}
    try:
        host.ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id], WaiterConfig=waiting)
        name = host.free_device_name(taken)
        taken.add(name)
        host.ec2.attach_volume(VolumeId=volume_id, InstanceId=host.instance_id, Device=name)
        host.ec2.get_waiter("volume_in_use").wait(VolumeIds=[volume_id], WaiterConfig=waiting)
    except (BotoCoreError, ClientError) as exc:
        raise DrillFailed(f"attaching {volume_id}: {exc}") from exc


def _take_down(host: EbsDrillHost, ledger: DrillLedger, volume_id: str, point: Path) -> list[str]:
    """Unmount, detach, delete; what could not be done, as text (it stays recorded)."""
    problems = []
    try:
        blockdev.unmount(point)
        with contextlib.suppress(OSError):
            point.rmdir()
        ledger.remove("mount", str(point))
    except OSError as exc:
        problems.append(f"mount {point}: {exc}")
        return problems  # never detach a volume that is still mounted
    try:
        remove_volume(host.ec2, volume_id, host.instance_id)
        ledger.remove("volume", volume_id)
    except (BotoCoreError, ClientError) as exc:
        problems.append(f"volume {volume_id}: {exc}")
    return problems


def owner() -> str:
    """The `backupd:owner` tag value restore volumes carry (volumes.create_volume)."""
    return socket.gethostname()
