"""A restore drill on this host: prove, end to end, that the backups restore.

Materialise the snapshot set's images (local provider), loop-mount them in a scratch
directory, point the binlog index at the copy, start a scratch server (own socket, no
network, no replication, no events; log_bin on the restored basename so the GTID state
continues), replay to TARGET, CHECK TABLE + CHECKSUM TABLE every user table. Everything it
created — server, mounts, loop devices, images — is removed in `finally`, even on failure.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from backupd.errors import DrillFailed, ProviderError
from backupd.restore import apply as applying
from backupd.restore import blockdev, table_dump
from backupd.restore.around import Around
from backupd.restore.drill_resources import DrillLedger
from backupd.restore.fetcher import Fetcher
from backupd.restore.prepare import Prepared, prepare
from backupd.restore.proof import TableProof, prove
from backupd.restore.relay_target import Method, choose
from backupd.restore.replay import Progress, ReplayServer
from backupd.restore.scratch import ScratchServer, remap_binlog_index
from backupd.restore.volumes import relocate
from backupd.restore_target import Target
from backupd.snapshot.catalog import SnapshotSet
from backupd.snapshot.providers.local import restore_image
from backupd.storage import ObjectStore


@dataclass
class DrillResult:
    prepared: Prepared
    applied: applying.Applied
    proofs: list[TableProof]
    seconds: float
    ready_seconds: float  # command start -> scratch server answering at the target (RTO)
    steps: dict[str, float] = field(default_factory=dict)
    dump: dict[str, Any] | None = None  # --tables: the dump written
    method: Method | None = None

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.proofs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": "success" if self.ok else "failed",
            **self.prepared.to_dict(),
            **({"method": self.method.to_dict()} if self.method else {}),
            "replay": self.applied.to_dict(),
            "tables": [
                {"table": p.table, "check": p.check, "checksum": p.checksum} for p in self.proofs
            ],
            "seconds": round(self.seconds, 3),
            "ready_seconds": round(self.ready_seconds, 3),
            "steps": {k: round(v, 3) for k, v in self.steps.items()},
            **({"dump": self.dump} if self.dump else {}),
        }


def mount_image(image: Path, mount_point: Path) -> None:
    try:
        blockdev.mount_image(image, mount_point)
    except OSError as exc:
        raise DrillFailed(f"cannot mount {image}: {exc}") from exc


def unmount(mount_point: Path, image: Path) -> None:
    """Unmount and free the loop device (autoclear normally does; detach what is left)."""
    with contextlib.suppress(OSError):
        blockdev.unmount(mount_point)
    for device in blockdev.loops_backed_by(image):
        with contextlib.suppress(OSError):
            blockdev.detach_loop(device)


def find_datadir(record: SnapshotSet, mounts: dict[str, Path]) -> Path:
    """The recorded datadir, or (old manifests) the directory holding ibdata1."""
    if record.datadir:
        found = relocate(record.datadir, mounts)
        if found is not None and found.is_dir():
            return found
    for root in mounts.values():
        for candidate in sorted(root.glob("**/ibdata1")):
            return candidate.parent
    raise DrillFailed(f"no MariaDB/MySQL datadir found on the volumes of {record.set_id}")


def binlog_basename(record: SnapshotSet, datadir: Path, mounts: dict[str, Path]) -> Path:
    if record.log_bin_basename:
        found = relocate(record.log_bin_basename, mounts)
        if found is not None:
            return found
    indexes = sorted(datadir.glob("**/*.index"))
    if not indexes:
        raise DrillFailed("no binlog index on the restored volumes")
    return indexes[0].with_suffix("")


@contextlib.contextmanager
def materialised(
    record: SnapshotSet, directory: str, workdir: Path, ledger: DrillLedger | None = None
) -> Iterator[dict[str, Path]]:
    """The set's images copied and mounted under `workdir`; mount (original) -> mount point."""
    if record.provider != "local":
        raise DrillFailed(
            f"set {record.set_id} was taken by the {record.provider} provider; drills on this "
            "host need local images (use 'restore volumes' on EC2)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    created: list[tuple[Path, Path]] = []
    try:
        mounts = {}
        for number, volume in enumerate(record.volumes):
            image = workdir / f"volume-{number}.img"
            point = workdir / f"mnt-{number}"
            created.append((point, image))
            if ledger is not None:  # before creating: a killed drill's are cleaned up later
                ledger.add("mount", str(point))
                ledger.add("loop", str(image))
            restore_image(directory, volume, str(image))
            mount_image(image, point)
            blockdev.adopt_tree(point)  # the daemon's drills run as `backupd`, not `mysql`
            mounts[volume.mount] = point
        yield mounts
    finally:
        for point, image in reversed(created):
            unmount(point, image)
            image.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                point.rmdir()
            if ledger is not None and not point.is_mount():
                ledger.remove("mount", str(point))
                ledger.remove("loop", str(image))


def start_scratch(record: SnapshotSet, mounts: dict[str, Path], socket_dir: Path) -> ScratchServer:
    datadir = find_datadir(record, mounts)
    basename = binlog_basename(record, datadir, mounts)
    index = basename.with_name(basename.name + ".index")
    if index.exists():
        old = str(PurePosixPath(record.log_bin_basename).parent) if record.log_bin_basename else ""
        if old:
            remap_binlog_index(index, old, str(basename.parent))
    # MIXED: temporary-table statements replayed from the archive are binlogged as they were.
    # A drill's copy is thrown away: no fsync per replayed commit (the replay's bottleneck).
    # The relay method's SQL thread binlogs what it applies only with log_slave_updates.
    extra = {
        "binlog_format": "MIXED",
        "innodb_flush_log_at_trx_commit": "2",
        "sync_binlog": "0",
        "log_slave_updates": "ON",
        "relay_log_recovery": "OFF",
    }
    return ScratchServer(datadir, socket_dir, log_bin=str(basename), extra=extra).start()


Materialise = Callable[[SnapshotSet, Path], contextlib.AbstractContextManager[dict[str, Path]]]


@dataclass(frozen=True)
class DrillOptions:
    """What to restore and how, as given by the command or the daemon's request; passed
    through the drill runner unchanged."""

    server: str | None = None
    cluster: str = ""
    timeline: int | None = None
    around: Around | None = None
    dump: table_dump.Request | None = None
    fetcher: Fetcher | None = None
    method: str = "auto"
    workers: int = 0


def drill(
    store: ObjectStore,
    target: Target,
    local_directory: str,
    workdir: Path,
    options: DrillOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    materialise: Materialise | None = None,
    provider: str = "local",
    ledger: DrillLedger | None = None,
) -> DrillResult:
    """Run one drill; DrillFailed/RestoreImpossible/ReplayFailed on failure.

    `materialise` mounts the chosen set's volumes (default: the local images); `ledger`
    records the scratch directories and server so a killed drill can be cleaned up."""
    options = options or DrillOptions()
    started = time.monotonic()
    steps: dict[str, float] = {}
    scratch_dir = Path(tempfile.mkdtemp(prefix="backupd-drill-"))  # short: socket path limit
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="drill-", dir=workdir))
    if ledger is not None:
        ledger.add("dir", str(run_dir))
        ledger.add("server", str(scratch_dir))
    if materialise is None:

        def materialise(record: SnapshotSet, where: Path) -> Any:
            return materialised(record, local_directory, where, ledger)

    scratch: ScratchServer | None = None
    try:
        prepared = prepare(
            store,
            target,
            run_dir / "binlogs",
            options.server,
            provider=provider,
            cluster=options.cluster,
            timeline=options.timeline,
            around=options.around,
            fetcher=options.fetcher,
        )
        steps["plan_and_fetch"] = time.monotonic() - started
        with materialise(prepared.snapshot, run_dir) as mounts:
            steps["materialise"] = time.monotonic() - started
            scratch = start_scratch(prepared.snapshot, mounts, scratch_dir)
            steps["server_started"] = time.monotonic() - started
            try:
                target_server = ReplayServer(socket=scratch.socket, user="root")
                chosen = choose(
                    options.method, target_server, prepared.snapshot.flavor, options.workers
                )
                applied = applying.apply(prepared, target_server, on_progress, method=chosen)
                ready = time.monotonic() - started
                steps["replayed"] = ready
                with scratch.connect() as conn:
                    proofs = prove(conn)
                steps["proved"] = time.monotonic() - started
                dumped = options.dump.write(scratch, prepared) if options.dump else None
            finally:
                scratch.stop()
                scratch = None
                steps["server_stopped"] = time.monotonic() - started
        steps["unmounted"] = time.monotonic() - started
        seconds = time.monotonic() - started
        return DrillResult(prepared, applied, proofs, seconds, ready, steps, dumped, chosen)
    except ProviderError as exc:
        raise DrillFailed(exc.message) from exc
    finally:
        if scratch is not None:
            scratch.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(scratch_dir, ignore_errors=True)
        if ledger is not None:
            ledger.remove("server", str(scratch_dir))
            ledger.remove("dir", str(run_dir))
