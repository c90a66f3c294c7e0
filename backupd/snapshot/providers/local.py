"""The local provider: point-in-time images of the frozen block devices, for test beds and
hosts without EBS.

While the filesystem is frozen its block device no longer changes, so a copy of the device
(for a loop device: its backing file) is a consistent image that mounts and that a server
starts on. A reflink clone (FICLONE) is instant where the target filesystem shares extents
(XFS reflink=1, btrfs); otherwise the copy is sparse, extent by extent (SEEK_DATA/SEEK_HOLE).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path

from backupd.durable import fsync_path
from backupd.errors import ProviderError
from backupd.snapshot.catalog import COMPLETED, SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.base import ProgressCallback, Target

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
CHUNK = 8 * 1024 * 1024
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
        if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF):
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


def copy_extent(src: int, dst: int, offset: int, length: int) -> int:
    """Copy one data extent in the kernel (copy_file_range); fall back to read/write."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done, offset + done, offset + done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return done + copy_range(src, dst, offset + done, length - done)
    return done


def copy_range(src: int, dst: int, offset: int, length: int) -> int:
    """Copy with read/write; all-zero chunks stay holes. Return the bytes written."""
    written = 0
    end = offset + length
    while offset < end:
        chunk = os.pread(src, min(CHUNK, end - offset), offset)
        if not chunk:
            break
        if chunk.count(0) != len(chunk):
            os.pwrite(dst, chunk, offset)
            written += len(chunk)
        offset += len(chunk)
    return written


def clone_or_copy(source: str, dest: str) -> tuple[str, int]:
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
                written = sum(copy_range(src, dst, off, n) for off, n in extents)
            else:
                written = sum(copy_extent(src, dst, off, n) for off, n in extents)
            os.ftruncate(dst, size)
            return "sparse-copy", written
        finally:
            os.close(dst)
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

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def prepare(self, mounts: list[str]) -> list[Target]:
        Path(self.directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        return [Target(mount, block_source(mount)) for mount in mounts]

    def start(
        self, set_id: str, targets: list[Target], tags: dict[str, str]
    ) -> list[VolumeSnapshot]:
        set_dir = Path(self.directory) / set_id
        set_dir.mkdir(mode=0o700)
        volumes = []
        for index, target in enumerate(targets):
            name = f"{set_id}/{index}-{Path(target.volume).name}.img"
            try:
                method, size = clone_or_copy(target.volume, os.path.join(self.directory, name))
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
        shutil.rmtree(set_dir)
        return [v.snapshot_id for v in record.volumes]
