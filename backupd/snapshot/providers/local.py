"""The local provider: point-in-time images of the frozen block devices, for test beds and
hosts without EBS.

While the filesystem is frozen its block device no longer changes, so a copy of the device
(for a loop device: its backing file) is a consistent image that mounts and that a server
starts on. A reflink clone (FICLONE) is instant where the target filesystem shares extents
(XFS reflink=1, btrfs); otherwise the copy is sparse, extent by extent (SEEK_DATA/SEEK_HOLE).

A copy runs while commits are blocked, so it must fit the lock budget: prepare() refuses one
whose data bytes at `copy_bytes_per_second` would outlast it (checked before locking), and a
copy still running at the deadline stops there (the run then fails and the set is discarded).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import struct
import tempfile
import time
from pathlib import Path

from backupd.durable import fsync_path
from backupd.errors import CopyTooSlow, ProviderError
from backupd.snapshot.catalog import COMPLETED, SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.base import ProgressCallback, Target

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)
CHUNK = 8 * 1024 * 1024
COPY_STEP = 64 * 1024 * 1024  # copy_file_range per call, so the deadline is checked often
MIB = 1024 * 1024
NO_REFLINK = (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF)
SYS_BLOCK = "/sys/dev/block"


def block_source(mount: str, sys_block: str = SYS_BLOCK) -> str:
    """The file to copy for a mount: a loop device's backing file, else the device node."""
    dev = os.stat(mount).st_dev
    node = Path(sys_block) / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        name = node.resolve().name
    except OSError as exc:
        raise ProviderError(message=f"{mount}: no block device behind it ({exc})") from exc
    backing = node / "loop" / "backing_file"
    if backing.exists():
        path = backing.read_text().strip()
        return path.removesuffix(" (deleted)")
    if not (node / "dev").exists():
        raise ProviderError(message=f"{mount}: not on a block device (st_dev {dev:#x})")
    return f"/dev/{name}"


def reflink(src_fd: int, dst_fd: int) -> bool:
    """Share extents instead of copying; False when the filesystems cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in NO_REFLINK:
            return False
        raise
    return True


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data regions; the whole range when holes cannot be asked for."""
    extents = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            offset = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [(0, size)]
    return extents


def check_deadline(deadline: float | None) -> None:
    """Stop a copy that the lock deadline (time.monotonic()) overtook: it is discarded anyway."""
    if deadline is not None and time.monotonic() > deadline:
        raise ProviderError(message="copy not finished when the lock deadline passed")


def copy_extent(src: int, dst: int, offset: int, length: int, deadline: float | None = None) -> int:
    """Copy one data extent in the kernel (copy_file_range); fall back to read/write."""
    done = 0
    try:
        while done < length:
            check_deadline(deadline)
            step = min(length - done, COPY_STEP)
            n = os.copy_file_range(src, dst, step, offset + done, offset + done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return done + copy_range(src, dst, offset + done, length - done, deadline)
    return done


def copy_range(src: int, dst: int, offset: int, length: int, deadline: float | None = None) -> int:
    """Copy with read/write; all-zero chunks stay holes. Return the bytes written."""
    written = 0
    end = offset + length
    while offset < end:
        check_deadline(deadline)
        chunk = os.pread(src, min(CHUNK, end - offset), offset)
        if not chunk:
            break
        if chunk.count(0) != len(chunk):
            os.pwrite(dst, chunk, offset)
            written += len(chunk)
        offset += len(chunk)
    return written


def clone_or_copy(source: str, dest: str, deadline: float | None = None) -> tuple[str, int]:
    """Make `dest` a point-in-time copy of `source`; return (method, bytes written)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            size = os.lseek(src, 0, os.SEEK_END)
            if reflink(src, dst):
                return "reflink", size
            extents = data_extents(src, size)
            if stat.S_ISBLK(os.fstat(src).st_mode):  # no holes to ask for: skip zero chunks
                written = sum(copy_range(src, dst, off, n, deadline) for off, n in extents)
            else:
                written = sum(copy_extent(src, dst, off, n, deadline) for off, n in extents)
            os.ftruncate(dst, size)
            return "sparse-copy", written
        finally:
            os.close(dst)
    finally:
        os.close(src)


def data_bytes(source: str) -> int:
    """What a copy of `source` must move: its data extents (a block device: all of it)."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            return size
        return sum(length for _offset, length in data_extents(fd, size))
    finally:
        os.close(fd)


def can_reflink(source: str, directory: str) -> bool:
    """Whether `source` clones into `directory`: one block cloned for real into a scratch file
    (FICLONERANGE, so a large live image is not locked for a whole clone)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst, scratch = tempfile.mkstemp(prefix=".reflink-probe-", dir=directory)
        try:
            block = os.fstatvfs(dst).f_bsize
            length = block if os.lseek(src, 0, os.SEEK_END) >= block else 0  # 0: to the end
            fcntl.ioctl(dst, FICLONERANGE, struct.pack("qQQQ", src, 0, length, 0))
        except OSError as exc:
            if exc.errno in NO_REFLINK:
                return False
            raise
        else:
            return True
        finally:
            os.close(dst)
            os.unlink(scratch)
    finally:
        os.close(src)


def restore_image(directory: str, volume: VolumeSnapshot, dest: str) -> str:
    """Materialise one image of a set as a new file (for restore); return the method used."""
    source = os.path.join(directory, volume.snapshot_id)
    if not os.path.isfile(source):
        raise ProviderError(message=f"snapshot image missing: {source}")
    method, _ = clone_or_copy(source, dest)
    fsync_path(dest)
    return method


class LocalProvider:
    name = "local"

    def __init__(
        self,
        directory: str,
        budget_seconds: float = 10.0,
        copy_bytes_per_second: int = 200 * MIB,
    ) -> None:
        self.directory = directory
        self.budget_seconds = budget_seconds  # snapshot.max_freeze_seconds
        self.copy_bytes_per_second = copy_bytes_per_second

    def prepare(self, mounts: list[str]) -> list[Target]:
        Path(self.directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        targets = [Target(mount, block_source(mount)) for mount in mounts]
        self._refuse_slow_copies(targets)
        return targets

    def _refuse_slow_copies(self, targets: list[Target]) -> None:
        """Estimate the copies that cannot be clones; refuse them all if they outlast the budget."""
        try:
            copies = [t for t in targets if not can_reflink(t.volume, self.directory)]
            size = sum(data_bytes(t.volume) for t in copies)
        except OSError as exc:
            raise ProviderError(message=f"cannot size the copy: {exc}") from exc
        seconds = size / self.copy_bytes_per_second
        if copies and seconds > self.budget_seconds:
            raise CopyTooSlow(
                mount=",".join(t.mount for t in copies),
                size_mib=round(size / MIB),
                rate_mib=round(self.copy_bytes_per_second / MIB),
                seconds=round(seconds, 1),
                budget=self.budget_seconds,
            )

    def start(
        self, set_id: str, targets: list[Target], tags: dict[str, str], deadline: float
    ) -> list[VolumeSnapshot]:
        set_dir = Path(self.directory) / set_id
        set_dir.mkdir(mode=0o700)
        volumes = []
        for index, target in enumerate(targets):
            name = f"{set_id}/{index}-{Path(target.volume).name}.img"
            try:
                dest = os.path.join(self.directory, name)
                method, size = clone_or_copy(target.volume, dest, deadline)
            except OSError as exc:
                raise ProviderError(message=f"copy of {target.volume} failed: {exc}") from exc
            volumes.append(
                VolumeSnapshot(target.mount, target.volume, name, COMPLETED, method, size)
            )
        return volumes

    def wait(
        self,
        set_id: str,
        volumes: list[VolumeSnapshot],
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> list[VolumeSnapshot]:
        """The copies are done; make them durable now that writers run again."""
        for volume in volumes:
            fsync_path(os.path.join(self.directory, volume.snapshot_id))
        return volumes

    def delete(self, record: SnapshotSet) -> list[str]:
        set_dir = Path(self.directory) / record.set_id
        if record.provider != self.name or not set_dir.is_dir():
            return []
        images = sorted(f"{record.set_id}/{image.name}" for image in set_dir.iterdir())
        shutil.rmtree(set_dir)
        return images
