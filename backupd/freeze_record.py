"""The runtime record of the mounts the daemon is about to freeze, for `thaw-all`.

Written durably before FIFREEZE and removed once every mount thawed, so a daemon killed while
frozen leaves behind exactly what needs thawing, even when the config was edited or broken
since. It lives in the runtime directory: tmpfs, gone at reboot like the freezes themselves.
Under systemd that is $RUNTIME_DIRECTORY (RuntimeDirectory=backupd: /run/backupd) for the
daemon and for ExecStopPost alike; without it, the directory of `daemon.socket`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from backupd.durable import fsync_dir, write_file
from backupd.freeze import ThawResult, thaw_all

RECORD_NAME = "frozen.json"
DEFAULT_RUNTIME_DIR = "/run/backupd"
RUNTIME_DIR_ENV = "RUNTIME_DIRECTORY"  # set by systemd from RuntimeDirectory=


class RecordUnreadable(ValueError):
    """The record exists but is not one this module wrote."""


def runtime_dir(socket_path: str | None = None) -> Path:
    """Where the record lives: systemd's runtime directory, else the control socket's."""
    from_systemd = os.environ.get(RUNTIME_DIR_ENV, "").split(":")[0]
    if from_systemd:
        return Path(from_systemd)
    if socket_path:
        return Path(socket_path).parent
    return Path(DEFAULT_RUNTIME_DIR)


def record_path(socket_path: str | None = None) -> Path:
    return runtime_dir(socket_path) / RECORD_NAME


def write_record(path: Path, mounts: list[str]) -> None:
    """Record `mounts` (crash-safe) before any of them is frozen."""
    body = {"mounts": list(mounts), "pid": os.getpid(), "written_at": time.time()}
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    write_file(path, json.dumps(body, indent=2).encode() + b"\n")


def read_record(path: Path) -> list[str]:
    """The recorded mounts; [] when there is no record (nothing was left frozen)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        mounts = json.loads(raw)["mounts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordUnreadable(f"{path}: not a freeze record: {exc}") from exc
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise RecordUnreadable(f"{path}: 'mounts' is not a list of paths")
    return mounts


def clear_record(path: Path) -> None:
    """Everything recorded is thawed: forget it."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def thaw_leftovers(path: Path) -> list[ThawResult]:
    """Thaw what a daemon that died frozen recorded (a new daemon's start); clear the record
    once all thawed. Nothing else runs a snapshot now, so nothing of ours should be frozen."""
    mounts = read_record(path)
    if not mounts:
        return []
    results = thaw_all(mounts)
    if not any(result.error for result in results):
        clear_record(path)
    return results
