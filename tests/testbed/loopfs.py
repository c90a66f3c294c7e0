"""Filesystem images mounted through loop devices: real filesystems that fsfreeze can freeze.

`LoopFilesystem` is one image (ext4 by default, or XFS with reflink=1); `ReflinkVolume` is
the opt-in reflink bed: an XFS image on its own loop device whose mount holds the ext4 data
image and the local snapshot directory, so the local provider's FICLONE path runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.testbed.util import run

MKFS = {
    "ext4": ("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"),
    "xfs": ("mkfs.xfs", "-q", "-f", "-m", "reflink=1"),
}


class LoopFilesystem:
    def __init__(
        self, image: Path, mount_point: Path, size_mb: int = 256, fstype: str = "ext4"
    ) -> None:
        self.image = image
        self.mount_point = mount_point
        self.size_mb = size_mb
        self.fstype = fstype
        self.device = ""

    def create(self) -> LoopFilesystem:
        self.image.parent.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as handle:
            handle.truncate(self.size_mb * 1024 * 1024)
        run(*MKFS[self.fstype], str(self.image))
        return self.mount()

    def mount(self) -> LoopFilesystem:
        self.mount_point.mkdir(parents=True, exist_ok=True)
        self.device = run("losetup", "--find", "--show", str(self.image)).stdout.strip()
        run("mount", "-t", self.fstype, self.device, str(self.mount_point))
        return self

    def thaw(self) -> None:
        """Thaw, ignoring 'not frozen'; teardown always does this first."""
        if self.mount_point.is_mount():
            run("fsfreeze", "--unfreeze", str(self.mount_point), check=False)

    def unmount(self) -> None:
        self.thaw()
        if self.mount_point.is_mount():
            result = run("umount", str(self.mount_point), check=False)
            if result.returncode != 0:
                run("umount", "--lazy", str(self.mount_point), check=False)
        for device in self._devices():
            run("losetup", "--detach", device, check=False)
        self.device = ""

    def _devices(self) -> list[str]:
        """Our loop device, or those a previous (interrupted) run left on the image."""
        if self.device:
            return [self.device]
        if not self.image.exists():
            return []
        listed = run("losetup", "--noheadings", "--output", "NAME", "--associated",
                     str(self.image), check=False)  # fmt: skip
        return listed.stdout.split()

    def destroy(self) -> None:
        self.unmount()
        if self.image.exists():
            os.unlink(self.image)


class ReflinkVolume:
    """An XFS (reflink=1) loop mount under `base` holding an ext4 data image and a snapshot
    directory: the local provider then clones the frozen image instead of copying it."""

    def __init__(self, base: Path, data_mount: Path, data_mb: int = 512) -> None:
        self.outer = LoopFilesystem(base / "xfs.img", base / "xfs", data_mb * 2 + 512, "xfs")
        self.data = LoopFilesystem(self.outer.mount_point / "data.img", data_mount, data_mb)
        self.snapshot_dir = self.outer.mount_point / "snapshots"

    def create(self) -> ReflinkVolume:
        self.outer.create()
        try:
            self.data.create()
        except BaseException:
            self.outer.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Inner first (unmount, detach), then the XFS it lives on."""
        try:
            self.data.destroy()
        finally:
            self.outer.destroy()
