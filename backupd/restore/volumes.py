"""`backupctl restore volumes`: the chosen snapshot set as new volumes, and the steps to use them.

Local provider: the set's images copied (reflinked where possible) into a directory. EBS:
new volumes created from the set's snapshots in an availability zone, tagged as restores,
optionally attached to an instance. Live volumes are never touched: only new ones are made.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from backupd.config import EbsSection
from backupd.errors import ProviderError, UsageError
from backupd.restore import warmup
from backupd.restore.record import DEFAULT_SOCKET
from backupd.restore.volume_spec import VolumeOverrides, create_volume_args, describe_spec
from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.local import restore_image

RESTORE_TAG = "backupd:restore-of"


@dataclass
class RestoredVolumes:
    set_id: str
    provider: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    warm: str = ""  # EBS: lazy | fast-snapshot-restore | initialized (restore/warmup.py)
    ready_seconds: float | None = None  # EBS: command start -> volumes made (and warm)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "set_id": self.set_id,
            "provider": self.provider,
            "volumes": self.volumes,
            "steps": self.steps,
        }
        if self.warm:
            doc |= {"warm": self.warm, "ready_seconds": self.ready_seconds, "notes": self.notes}
        return doc


@dataclass(frozen=True)
class Warming:
    """`restore volumes` warm-up choices (restore/warmup.py)."""

    fast_snapshot_restore: bool = False
    fast_restore_timeout: float = 4 * 3600.0  # EC2: about an hour per TiB
    initialize: bool = False
    device_timeout: float = 120.0
    on_read: Callable[[warmup.ReadProgress], None] | None = None

    @property
    def mode(self) -> str:
        if self.initialize:
            return warmup.INITIALIZED
        return warmup.FAST_SNAPSHOT_RESTORE if self.fast_snapshot_restore else warmup.LAZY


def server_steps(
    record: SnapshotSet, mounts: dict[str, str], replay: str, socket: str = DEFAULT_SOCKET
) -> list[str]:
    """Fix the binlog index, start the server with nothing acting on the world, replay
    (`replay`: the exact command, pinned by the restore record)."""
    datadir = _moved(record.datadir, mounts) or "<restored datadir>"
    basename = _moved(record.log_bin_basename, mounts) or "<restored binlog basename>"
    old_dir = str(PurePosixPath(record.log_bin_basename).parent) if record.log_bin_basename else ""
    new_dir = str(PurePosixPath(basename).parent)
    steps = []
    if old_dir and old_dir != new_dir:
        steps.append(f"sed -i 's#^{old_dir}/#{new_dir}/#' {shlex.quote(basename + '.index')}")
    steps += [
        f"mariadbd --datadir={shlex.quote(datadir)} --log-bin={shlex.quote(basename)} "
        "--skip-slave-start --log-slave-updates --relay-log-recovery=OFF --event-scheduler=OFF "
        "--skip-networking "
        "--innodb-flush-log-at-trx-commit=2 --sync-binlog=0 "
        f"--socket={shlex.quote(socket)} &   # mysqld on MySQL",
        replay,
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


def local_volumes(
    record: SnapshotSet, directory: str, dest: Path, replay: str, socket: str = DEFAULT_SOCKET
) -> RestoredVolumes:
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
    result.steps += server_steps(record, mounts, replay, socket)
    return result


def ebs_volumes(
    record: SnapshotSet,
    section: EbsSection,
    zone: str,
    replay: str,
    instance_id: str = "",
    devices: list[str] | None = None,
    client: Any = None,
    socket: str = DEFAULT_SOCKET,
    overrides: VolumeOverrides = VolumeOverrides(),  # noqa: B008 (frozen)
    warming: Warming = Warming(),
) -> RestoredVolumes:
    started = time.monotonic()
    devices = devices or []
    if devices and not instance_id:
        raise UsageError("--device needs --instance-id")
    if warming.initialize and not devices:
        raise UsageError("--initialize reads the attached devices: give --instance-id, --device")
    specs = [create_volume_args(v, overrides) for v in record.volumes]  # refused before any
    if devices and len(devices) != len(record.volumes):
        raise UsageError(
            f"set {record.set_id} has {len(record.volumes)} volume(s): give as many --device"
        )
    ec2: Any = client or boto3.client(
        "ec2", region_name=section.region or None, endpoint_url=section.endpoint_url or None
    )
    result = RestoredVolumes(record.set_id, "ebs", warm=warming.mode)
    snapshot_ids = [v.snapshot_id for v in record.volumes]
    if warming.fast_snapshot_restore:
        waited = warmup.enable_fast_restore(
            ec2, snapshot_ids, zone, warming.fast_restore_timeout, section.poll_seconds
        )
        result.notes.append(f"fast snapshot restore enabled in {zone} after {waited:.0f}s")
    mounts = {}
    try:
        for number, volume in enumerate(record.volumes):
            device = devices[number] if devices else ""
            entry = create_volume(ec2, record, volume, zone, instance_id, device, specs[number])
            result.volumes.append(entry)
            point = mounts[volume.mount] = f"/mnt/restore-{number}"
            where = device or f"<device of {entry['volume_id']}>"
            result.steps.append(f"mkdir -p {point} && mount {where} {point}   # was {volume.mount}")
    finally:  # FSR is billed per hour while enabled: off again even when a create failed
        on = warming.fast_snapshot_restore
        if failed := warmup.disable_fast_restore(ec2, snapshot_ids, zone) if on else "":
            result.notes.append(failed)
    if warming.initialize:
        initialize(ec2, result.volumes, section.device_links, warming)
    elif not warming.fast_snapshot_restore:
        result.notes.append(
            "volumes restore lazily: the first read of each block comes from S3 (slow); "
            "--initialize or --fast-snapshot-restore warm them before the server starts"
        )
    result.ready_seconds = round(time.monotonic() - started, 3)
    result.steps += server_steps(record, mounts, replay, socket)
    return result


def initialize(ec2: Any, entries: list[dict[str, Any]], by_id: str, warming: Warming) -> None:
    """Read each attached volume once, through its device on this host."""
    try:
        ec2.get_waiter("volume_in_use").wait(VolumeIds=[e["volume_id"] for e in entries])
    except (BotoCoreError, ClientError) as exc:
        raise ProviderError(message=f"waiting for the attachments: {exc}") from exc
    for entry in entries:
        link = warmup.device_link(entry["volume_id"], by_id)
        warmup.wait_for_device(link, warming.device_timeout)
        began = time.monotonic()
        entry["initialized_bytes"] = warmup.read_through(link, warming.on_read)
        entry["initialize_seconds"] = round(time.monotonic() - began, 3)


def create_volume(
    ec2: Any,
    record: SnapshotSet,
    volume: VolumeSnapshot,
    zone: str,
    instance: str,
    device: str,
    spec: dict[str, Any],
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
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
            TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
            **spec,
        )
        entry: dict[str, Any] = {
            "mount": volume.mount,
            "snapshot_id": volume.snapshot_id,
            "volume_id": str(made["VolumeId"]),
            **describe_spec(spec, volume),
        }
        if device:
            ec2.get_waiter("volume_available").wait(VolumeIds=[entry["volume_id"]])
            ec2.attach_volume(VolumeId=entry["volume_id"], InstanceId=instance, Device=device)
            entry["device"] = device
    except (BotoCoreError, ClientError) as exc:
        raise ProviderError(message=f"creating a volume from {volume.snapshot_id}: {exc}") from exc
    return entry
