"""The restore record: which snapshot set a restore started from, written next to its data.

`restore volumes` writes it; `restore replay --record` reads it and replays from exactly
that set (never re-planned from a newer one taken or pruned in between) into a server that
must still be at that set's position. The record is the link between the two commands,
which may run hours apart, on different hosts, by different people.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupd.durable import write_file
from backupd.errors import UsageError
from backupd.snapshot.catalog import SnapshotSet

FORMAT = "backupd-restore-record/1"
DEFAULT_SOCKET = "/run/backupd-restore.sock"


@dataclass(frozen=True)
class RestoreRecord:
    set_id: str
    provider: str
    cluster: str
    timeline: int  # the timeline the restore was planned on (0: archive before timelines)
    server: str  # the archive's server identity
    coordinate: str  # the set's binlog coordinate: where the replay starts
    gtid: str  # the set's GTID position: what the restored server reports before the replay
    flavor: str
    consistency: str
    target: str  # the --to the volumes were restored for
    created_at: float
    volumes: list[dict[str, str]] = field(default_factory=list)
    format: str = FORMAT

    @classmethod
    def of(
        cls, record: SnapshotSet, cluster: str, timeline: int, server: str, target: str
    ) -> RestoreRecord:
        return cls(
            record.set_id,
            record.provider,
            cluster,
            timeline,
            server,
            record.coordinate,
            record.gtid,
            record.flavor or "mariadb",
            record.consistency,
            target,
            time.time(),
        )

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    def write(self, path: Path) -> None:
        """Durably: a record that names the set must survive a crash of the host."""
        write_file(path, self.to_json())


def load(path: Path) -> RestoreRecord:
    """Read a record; a missing, unreadable or foreign file is refused with its path."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the restore record {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path} is not a backupd restore record ({FORMAT})")
    known = set(RestoreRecord.__dataclass_fields__)
    try:
        return RestoreRecord(**{k: v for k, v in doc.items() if k in known})
    except TypeError as exc:
        raise UsageError(f"restore record {path} is incomplete: {exc}") from exc


def find(name: str, state_dir: str) -> Path:
    """`--record` takes a file, or a set id whose record `restore volumes` kept in the
    state directory (the EBS default)."""
    path = Path(name)
    if path.exists() or os.sep in name:
        return path
    return state_path(state_dir, name)


def state_path(state_dir: str, set_id: str) -> Path:
    return Path(state_dir) / "restores" / f"{set_id}.json"


def local_path(dest: Path, set_id: str) -> Path:
    return dest / f"{set_id}.restore.json"


def writable(path: Path) -> Path:
    """Check before any volume is made that the record can be written afterwards."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {path.parent} for the restore record: {exc}") from exc
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"cannot write the restore record in {path.parent} (use --record-file)")
    return path


def replay_command(
    record: RestoreRecord, path: Path, socket: str, config: str | None = None
) -> str:
    """The exact `restore replay` that continues this restore, flags included."""
    words = ["backupctl"]
    if config:
        words += ["--config", str(Path(config).resolve())]
    words += ["restore", "replay", "--record", str(path.resolve()), "--to", record.target]
    words += ["--target-socket", socket]
    if record.consistency != "application":
        words.append("--allow-crash-consistent")
    return shlex.join(words)


def to_dict(record: RestoreRecord, path: Path, command: str) -> dict[str, Any]:
    return {**asdict(record), "path": str(path), "replay_command": command}
