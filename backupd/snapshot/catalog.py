"""The snapshot catalog: one JSON manifest per snapshot set in the backup repository.

The format is pure (`SnapshotSet.to_json` / `SnapshotSet.from_json`) so restore and verify
read the very layout written here, without the daemon. Keys: `snapshots/<set_id>.json`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from backupd.errors import StorageError
from backupd.storage import ObjectStore

PREFIX = "snapshots/"
FORMAT_VERSION = 1

# States: a run ends in one of the terminal ones; "pending" = started, not yet completed.
PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class VolumeSnapshot:
    """One member of a set: which volume/mount was captured and the provider's handle."""

    mount: str
    volume: str  # EBS volume id, or the block device / image the local provider copied
    snapshot_id: str  # EBS snapshot id, or the image file name inside the set directory
    state: str = PENDING
    method: str = ""  # local provider: "reflink" | "sparse-copy"; ebs: "create-snapshots" ...
    size_bytes: int = 0
    copies: dict[str, str] = field(default_factory=dict)  # region -> snapshot id
    progress: str = ""  # EBS: DescribeSnapshots' Progress ("42%") when last asked
    # EBS: the captured volume as DescribeVolumes saw it, so a restore makes the same kind
    # (`restore volumes`); empty/0 in manifests written before they were recorded.
    volume_type: str = ""  # gp3, gp2, io2, ...
    size_gib: int = 0
    iops: int = 0
    throughput: int = 0  # MiB/s (gp3)
    encrypted: bool = False
    kms_key_id: str = ""


@dataclass(frozen=True)
class SnapshotSet:
    set_id: str
    provider: str
    host: str
    owner: str
    version: str  # backupd version that took it
    state: str = PENDING
    consistency: str = "application"  # "application" | "crash"
    trigger: str = "manual"  # "manual" | "schedule" | "restore_budget"
    coordinate: str = ""  # binlog file:pos read while commits were blocked
    gtid: str = ""
    flavor: str = ""
    server_version: str = ""
    # What a restore needs to find the binlog archive and the data on the restored volumes;
    # empty in manifests written before they were recorded.
    server_identity: str = ""  # the archive's <server>: server_id (MariaDB), server_uuid (MySQL)
    datadir: str = ""
    log_bin_basename: str = ""
    # The binlog archive's cluster and the timeline the server was writing when the set was
    # taken (0: not known; restore then derives it from the identity and the lock time).
    cluster: str = ""
    timeline: int = 0
    mounts: list[str] = field(default_factory=list)
    volumes: list[VolumeSnapshot] = field(default_factory=list)
    started_at: float = 0.0
    locked_at: float = 0.0
    frozen_at: float = 0.0
    thawed_at: float = 0.0
    unlocked_at: float = 0.0
    completed_at: float = 0.0
    lock_seconds: float = 0.0
    freeze_seconds: float = 0.0
    error: str = ""
    error_code: str = ""
    attempts: int = 0  # locked sections tried (snapshot.lock_attempts); 0: none reached
    attempt_errors: list[str] = field(default_factory=list)  # "code: message" of retried ones

    @property
    def key(self) -> str:
        return manifest_key(self.set_id)

    def with_(self, **changes: Any) -> SnapshotSet:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotSet:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["volumes"] = [
            VolumeSnapshot(
                **{k: v for k, v in vol.items() if k in VolumeSnapshot.__dataclass_fields__}
            )
            for vol in data.get("volumes", [])
        ]
        return cls(**values)

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotSet:
        data = json.loads(raw)
        if not isinstance(data, dict) or "set_id" not in data:
            raise ValueError("not a snapshot manifest")
        return cls.from_dict(data)


def new_set_id(now: float | None = None) -> str:
    """Sortable by time, unique across hosts: 20261126T101500Z-3f9a1c."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


def manifest_key(set_id: str) -> str:
    return f"{PREFIX}{set_id}.json"


class Catalog:
    """Reads and writes manifests in the repository; unreadable manifests are reported."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(self, record: SnapshotSet) -> None:
        self.store.put(record.key, record.to_json())

    def get(self, set_id: str) -> SnapshotSet:
        return SnapshotSet.from_json(self.store.get(manifest_key(set_id)))

    def delete(self, set_id: str) -> None:
        self.store.delete(manifest_key(set_id))

    def list(self) -> tuple[list[SnapshotSet], list[str]]:
        """Every set, oldest first, and the keys that could not be parsed."""
        listing = self.listing()
        return listing.sets, [str(item) for item in listing.unreadable]

    def listing(self) -> Listing:
        """Every readable set, oldest first, and every manifest key that names a set but
        could not be read or parsed. A failing LIST raises: there is no partial answer."""
        sets: list[SnapshotSet] = []
        unreadable: list[Unreadable] = []
        for info in self.store.list(PREFIX):
            if not info.key.endswith(".json"):
                continue
            try:
                sets.append(SnapshotSet.from_json(self.store.get(info.key)))
            except (StorageError, ValueError, TypeError) as exc:
                reason = exc.message if isinstance(exc, StorageError) else str(exc)
                unreadable.append(Unreadable(info.key, reason))
        sets.sort(key=lambda s: (s.started_at, s.set_id))
        return Listing(sets, unreadable)


@dataclass(frozen=True)
class Unreadable:
    """A manifest key that exists (so it names a set) whose body could not be read."""

    key: str
    reason: str

    @property
    def set_id(self) -> str:
        return self.key.removeprefix(PREFIX).removesuffix(".json")

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


@dataclass(frozen=True)
class Listing:
    sets: list[SnapshotSet]
    unreadable: list[Unreadable]
