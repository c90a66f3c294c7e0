"""What a snapshot provider does, in the order the coordinator calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot

# Tag keys on every snapshot a provider creates (EBS) and in the manifest.
TAG_SET_ID = "backupd:set-id"
TAG_OWNER = "backupd:owner"
TAG_HOST = "backupd:host"
TAG_VERSION = "backupd:version"
TAG_CONSISTENCY = "backupd:consistency"
TAG_COORDINATE = "backupd:binlog-coordinate"
TAG_GTID = "backupd:gtid"
TAG_MOUNT = "backupd:mount"
TAG_TRIGGER = "backupd:trigger"  # manual | schedule | restore_budget (SnapshotSet.trigger)


# Called with the volumes' latest state while a provider waits (`snapshot --wait` shows it).
ProgressCallback = Callable[[list[VolumeSnapshot]], None]


def progress_text(volumes: list[VolumeSnapshot]) -> str:
    """`vol-1 42%, vol-2 100%`: EC2's progress per volume, for people."""
    return ", ".join(f"{v.volume} {v.progress or v.state}" for v in volumes)


@dataclass(frozen=True)
class Target:
    """One thing to capture: a frozen mount and the volume (or device) beneath it."""

    mount: str
    volume: str


class SnapshotProvider(Protocol):
    name: str

    def prepare(self, mounts: list[str]) -> list[Target]:
        """Resolve volumes before anything is locked (API calls and lookups go here)."""

    def start(
        self, set_id: str, targets: list[Target], tags: dict[str, str], deadline: float
    ) -> list[VolumeSnapshot]:
        """Start the point-in-time capture of every target; called while frozen, so be quick.

        `deadline` (time.monotonic()) ends the lock budget: a capture not done by then is
        discarded, so stop working on it there."""

    def wait(
        self,
        set_id: str,
        volumes: list[VolumeSnapshot],
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> list[VolumeSnapshot]:
        """Block until the captures are complete (after the thaw); return their final state.

        Raise SnapshotStillPending when `timeout` passes first (the set is then followed up).
        """

    def delete(self, record: SnapshotSet) -> list[str]:
        """Delete the set's snapshots that this daemon owns; return what was deleted."""
