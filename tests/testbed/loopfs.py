"""An ext4 image mounted through a loop device: a real filesystem that fsfreeze can freeze."""

from __future__ import annotations

import os
from pathlib import Path

from tests.testbed.util import run


class LoopFilesystem:
    def __init__(self, image: Path, mount_point: Path, size_mb: int = 256) -> None:
        self.image = image
        self.mount_point = mount_point
        self.size_mb = size_mb
        self.device = ""

    def create(self) -> LoopFilesystem:
        self.image.parent.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as handle:
            handle.truncate(self.size_mb * 1024 * 1024)
        run(
            "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.image)
        )
        return self.mount()

    def mount(self) -> LoopFilesystem:
        self.mount_point.mkdir(parents=True, exist_ok=True)
        self.device = run("losetup", "--find", "--show", str(self.image)).stdout.strip()
        run("mount", "-t", "ext4", self.device, str(self.mount_point))
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
        if self.device:
            run("losetup", "--detach", self.device, check=False)
            self.device = ""

    def destroy(self) -> None:
        self.unmount()
        if self.image.exists():
            os.unlink(self.image)
