"""How restored EBS volumes get warm, and how long that takes.

A volume made from a snapshot is usable at once but restores lazily: the first read of each
block fetches it from S3, so a server started on a cold volume runs crash recovery and the
replay at a fraction of the volume's speed. Two remedies, both optional and both counted in
the restore time:

- Fast Snapshot Restore (`--fast-snapshot-restore`): EC2 pre-warms the snapshot in the zone
  (EnableFastSnapshotRestores, then wait for `enabled`); volumes created then are fully warm.
  It is billed per hour while enabled, so it is disabled again once the volumes exist.
- An initialisation pass (`--initialize`): read every block of the attached device once,
  before the server starts (what AWS documents with dd/fio), with progress.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backupd.errors import ProviderError
from backupd.restore.replay import Progress
from backupd.snapshot.providers.ebs import NVME_PREFIX

CHUNK = 1 << 20  # 1 MiB reads: EBS initialisation is throughput-bound, not IOPS-bound
LAZY = "lazy"
FAST_SNAPSHOT_RESTORE = "fast-snapshot-restore"
INITIALIZED = "initialized"


@dataclass
class ReadProgress(Progress):
    """The replay's progress record (bytes, rate, ETA), for one device being read."""

    path: str = ""


def device_link(volume_id: str, by_id: str) -> Path:
    """Where udev links an attached EBS volume on a Nitro instance (the NVMe serial)."""
    return Path(by_id) / f"{NVME_PREFIX}{volume_id.removeprefix('vol-')}"


def wait_for_device(path: Path, timeout: float, poll: float = 0.5) -> None:
    """The attached volume's device appears some seconds after AttachVolume returns."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            raise ProviderError(message=f"{path} did not appear within {timeout:.0f}s")
        time.sleep(poll)


def read_through(
    path: Path,
    on_progress: Callable[[ReadProgress], None] | None = None,
    interval: float = 1.0,
) -> int:
    """Read every byte of `path` once (a block device or an image); returns the bytes read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        total = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        progress = ReadProgress(total, time.monotonic(), path=str(path))
        next_report = progress.started + interval
        while chunk := os.read(fd, CHUNK):
            progress.done_bytes += len(chunk)
            if on_progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + interval
                on_progress(progress)
        if on_progress is not None:
            on_progress(progress)
        return progress.done_bytes
    finally:
        os.close(fd)


def enable_fast_restore(
    ec2: Any, snapshot_ids: list[str], zone: str, timeout: float, poll: float
) -> float:
    """Enable FSR for the snapshots in `zone` and wait until every one is `enabled`;
    returns the seconds it took."""
    started = time.monotonic()
    try:
        ec2.enable_fast_snapshot_restores(AvailabilityZones=[zone], SourceSnapshotIds=snapshot_ids)
        while True:
            states = fast_restore_states(ec2, snapshot_ids, zone)
            if all(states.get(i) == "enabled" for i in snapshot_ids):
                return time.monotonic() - started
            if time.monotonic() - started >= timeout:
                raise ProviderError(
                    message=f"fast snapshot restore not enabled within {timeout:.0f}s: {states}"
                )
            time.sleep(poll)
    except (BotoCoreError, ClientError) as exc:
        raise ProviderError(message=f"EnableFastSnapshotRestores: {exc}") from exc


def fast_restore_states(ec2: Any, snapshot_ids: list[str], zone: str) -> dict[str, str]:
    answer = ec2.describe_fast_snapshot_restores(
        Filters=[
            {"Name": "snapshot-id", "Values": snapshot_ids},
            {"Name": "availability-zone", "Values": [zone]},
        ]
    )
    return {
        str(item["SnapshotId"]): str(item.get("State", ""))
        for item in answer.get("FastSnapshotRestores", [])
    }


def disable_fast_restore(ec2: Any, snapshot_ids: list[str], zone: str) -> str:
    """Stop the hourly FSR charge once the volumes exist; "" or why it failed (the volumes
    are made: a failure here is reported, not raised)."""
    try:
        ec2.disable_fast_snapshot_restores(AvailabilityZones=[zone], SourceSnapshotIds=snapshot_ids)
    except (BotoCoreError, ClientError) as exc:
        return f"DisableFastSnapshotRestores failed ({exc}): disable it by hand, it is billed"
    return ""
