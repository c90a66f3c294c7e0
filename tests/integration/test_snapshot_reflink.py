"""The local provider's reflink path on real parts: the frozen ext4 image lives on an XFS
(reflink=1) loop mount next to the snapshot directory, so the snapshot is a FICLONE clone."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.local import restore_image
from tests.clients import backupctl_json
from tests.conftest import ConfigFactory
from tests.testbed.daemon import DaemonProcess
from tests.testbed.loopfs import LoopFilesystem, ReflinkVolume
from tests.testbed.util import run

pytestmark = pytest.mark.integration


def write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def shared_extents(path: Path) -> int:
    """How many of the file's extents FIEMAP reports as shared with another file."""
    report = run("filefrag", "-v", str(path)).stdout
    return sum(1 for line in report.splitlines() if "shared" in line)


def test_reflink_snapshot_is_a_point_in_time_clone(
    reflink_volume: ReflinkVolume,
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    data = reflink_volume.data
    marker = data.mount_point / "marker"
    write_synced(marker, b"before")
    base_config["snapshot"].update({"mounts": [str(data.mount_point)], "lock_timeout_seconds": 2.0})
    base_config["snapshot"]["local"]["directory"] = str(reflink_volume.snapshot_dir)
    # A copy at 1 KiB/s could never fit the budget: the run completes only because the
    # pre-lock probe found that the image clones.
    base_config["snapshot"]["local"]["copy_bytes_per_second"] = 1024
    try:
        start_daemon(write_config(base_config))
        _code, record = backupctl_json(
            "--socket", base_config["daemon"]["socket"], "snapshot", "--wait"
        )
    finally:
        data.thaw()
    assert record["state"] == "completed", record
    (volume,) = record["volumes"]
    assert volume["method"] == "reflink"
    repo = Path(base_config["storage"]["url"].removeprefix("file://"))
    manifest = SnapshotSet.from_json((repo / "snapshots" / f"{record['set_id']}.json").read_bytes())
    assert [v.method for v in manifest.volumes] == ["reflink"]

    image = reflink_volume.snapshot_dir / volume["snapshot_id"]
    assert shared_extents(image) > 0  # the clone shares the source image's blocks
    frozen_digest = digest(image)

    # The source keeps changing; copy-on-write leaves the clone as it was.
    write_synced(marker, b"after")
    write_synced(data.mount_point / "filler", os.urandom(4 << 20))
    run("sync")
    assert digest(image) == frozen_digest

    restored = LoopFilesystem(reflink_volume.outer.mount_point / "restored.img",
                              reflink_volume.outer.mount_point / "restored")  # fmt: skip
    method = restore_image(str(reflink_volume.snapshot_dir), VolumeSnapshot(**volume),
                           str(restored.image))  # fmt: skip
    assert method == "reflink"
    restored.mount()
    try:
        assert (restored.mount_point / "marker").read_bytes() == b"before"
        assert not (restored.mount_point / "filler").exists()
    finally:
        restored.destroy()
    assert marker.read_bytes() == b"after"
