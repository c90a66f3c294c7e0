"""What a drill created, written down before it is created, and the clean-up of a killed drill.

A drill makes things that outlive a killed process: EBS volumes and their attachments, mounts,
loop devices, a scratch server in its own session, directories. Each is recorded in
`<state_dir>/drill/resources.json` (durably) *before* the call that creates it, and removed
from the record once it is gone. A drill holds `drill.lock` (flock) while it runs, so a
record whose lock is free belongs to a drill that died: the next drill, the daemon at start
and `backupctl drill --clean-up` remove what it names. EBS volumes are also found by their
`backupd:drill` tag (the run id), which covers a volume EC2 created after the record was
written but before its id came back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from backupd.durable import write_file
from backupd.errors import DrillRunning
from backupd.log import get_logger
from backupd.restore import blockdev

_log = get_logger("drill")

RECORD = "resources.json"
LOCK = "drill.lock"
DRILL_TAG = "backupd:drill"  # value: the run id; on every volume a drill creates
# Clean-up order: what uses a thing goes before it (server -> mount -> loop -> volume -> dirs).
# "run" last: its removal sweeps EC2 for volumes tagged with the run id.
ORDER = ("server", "mount", "loop", "attachment", "volume", "dir", "run")


def new_run_id() -> str:
    return time.strftime("drill-%Y%m%dT%H%M%SZ-", time.gmtime()) + secrets.token_hex(3)


class DrillLedger:
    """The record of one state directory's drill resources; one drill at a time holds it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / RECORD
        self.run_id = ""
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[DrillLedger]:
        """Hold the drill lock (DrillRunning when another process has it)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise DrillRunning(directory=str(self.directory)) from exc
        self._lock_fd = fd
        try:
            yield self
        finally:
            self._lock_fd = None
            if not self.path.exists():  # nothing recorded: leave the directory as it was
                (self.directory / LOCK).unlink(missing_ok=True)
            os.close(fd)  # releases the flock

    def entries(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            _log.warning("drill record unreadable; starting a new one", error=str(exc))
            return []
        return [e for e in document.get("resources", []) if isinstance(e, dict)]

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        write_file(self.path, json.dumps({"resources": entries}, indent=1).encode())

    def add(self, kind: str, value: str, **details: str) -> None:
        """Record a resource before creating it (the run id goes with it)."""
        assert self._lock_fd is not None, "record only while holding the drill lock"
        entry = {"kind": kind, "id": value, "run_id": self.run_id, **details}
        self._write([*self.entries(), entry])

    def update(self, kind: str, value: str, **details: str) -> None:
        self._write(
            [{**e, **details} if (e["kind"], e["id"]) == (kind, value) else e
             for e in self.entries()]
        )  # fmt: skip

    def remove(self, kind: str, value: str) -> None:
        self._write([e for e in self.entries() if (e["kind"], e["id"]) != (kind, value)])


Ec2Factory = Callable[[], Any]


def clean_up(ledger: DrillLedger, ec2: Ec2Factory | None, owner: str) -> list[str]:
    """Remove everything the record names (caller holds the lock); lines saying what went.

    Each resource is tried even when one before it failed; what could not be removed stays
    in the record for the next try."""
    entries = ledger.entries()
    done: list[str] = []
    for kind in ORDER:
        for entry in [e for e in entries if e["kind"] == kind]:
            try:
                what = _remove(entry, ec2, owner)
            except Exception as exc:  # keep going: the rest must still be cleaned
                _log.warning("drill clean-up failed", kind=kind, id=entry["id"], error=str(exc))
                continue
            ledger.remove(kind, entry["id"])
            if what:
                done.append(what)
    return done


def _remove(entry: dict[str, Any], ec2: Ec2Factory | None, owner: str) -> str:
    kind, value = entry["kind"], str(entry["id"])
    if kind in ("attachment", "volume", "run"):
        if ec2 is None:
            if kind == "run":
                return ""
            raise RuntimeError(f"{kind} {value}: no EC2 endpoint configured")
        if kind == "run":
            return ", ".join(_tagged_volumes(ec2(), value, owner))
        return remove_volume(ec2(), value, str(entry.get("instance", "")))
    local = {"server": _stop_server, "mount": _unmount, "loop": _detach, "dir": _remove_dir}
    if kind not in local:
        raise RuntimeError(f"unknown drill resource kind {kind!r}")
    return local[kind](Path(value))


def _unmount(point: Path) -> str:
    if not point.is_mount():
        return ""
    blockdev.unmount(point)
    return f"unmounted {point}"


def _detach(image: Path) -> str:
    devices = blockdev.loops_backed_by(image)
    for device in devices:
        blockdev.detach_loop(device)
    return f"detached {', '.join(devices)}" if devices else ""


def _remove_dir(path: Path) -> str:
    if not path.exists():
        return ""
    shutil.rmtree(path, ignore_errors=True)
    return f"removed {path}"


def _stop_server(scratch_dir: Path) -> str:
    """Kill the scratch server started with `<scratch_dir>/scratch.cnf` (it has its own
    session, so it outlives a killed drill); found by its command line, never by name."""
    marker = f"--defaults-file={scratch_dir / 'scratch.cnf'}".encode()
    killed = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if marker in (proc / "cmdline").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)  # a throwaway copy: no shutdown needed
                killed.append(proc.name)
    for pid in killed:
        _wait_gone(int(pid))
    shutil.rmtree(scratch_dir, ignore_errors=True)
    return f"stopped scratch server {', '.join(killed)}" if killed else ""


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child (a drill in this process): reap it
        time.sleep(0.05)  # no event for another session's process ending


def remove_volume(ec2: Any, volume_id: str, instance: str = "", timeout: float = 600) -> str:
    """Detach (when attached) and delete a drill volume; gone already is success."""
    from botocore.exceptions import ClientError

    try:
        found = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except ClientError as exc:
        if "NotFound" in str(exc.response.get("Error", {}).get("Code", "")):
            return ""
        raise
    if not found:
        return ""
    waiter_config = {"Delay": 2, "MaxAttempts": max(1, int(timeout / 2))}
    if found[0].get("Attachments"):
        ec2.detach_volume(VolumeId=volume_id, **({"InstanceId": instance} if instance else {}))
        ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id], WaiterConfig=waiter_config)
    ec2.delete_volume(VolumeId=volume_id)
    return f"deleted volume {volume_id}"


def _tagged_volumes(ec2: Any, run_id: str, owner: str) -> list[str]:
    """Volumes of the run that the record never named (killed before the id came back)."""
    answer = ec2.describe_volumes(
        Filters=[
            {"Name": f"tag:{DRILL_TAG}", "Values": [run_id]},
            {"Name": "tag:backupd:owner", "Values": [owner]},
        ]
    )
    return [remove_volume(ec2, v["VolumeId"]) for v in answer.get("Volumes", [])]


@contextlib.contextmanager
def recorded(ledger: DrillLedger, kind: str, value: str, **details: str) -> Iterator[None]:
    """Record before creating; forget once the `with` body (which removes it) succeeded."""
    ledger.add(kind, value, **details)
    yield
    ledger.remove(kind, value)
