"""Loop devices and mounts by system call, so drills also run inside the hardened unit.

util-linux `mount` refuses a caller that is not uid 0 for anything outside fstab ("only root
can do that"), even with CAP_SYS_ADMIN; the daemon runs as `backupd` with that capability and
the `disk` group (docs/security.md). So drills attach loop devices with the loop ioctls and
mount with mount(2) themselves: the same code as root from a shell and in the unit.

A loop device is attached with autoclear and mounted while its descriptor is still open: a
process killed before the mount leaves no loop device behind, and unmounting frees it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
from pathlib import Path

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LO_FLAGS_AUTOCLEAR = 4
MNT_DETACH = 2
# struct loop_info64: device, inode, rdevice, offset, sizelimit; number, encrypt_type,
# encrypt_key_size, flags; file_name[64], crypt_name[64], encrypt_key[32]; init[2].
LOOP_INFO64 = "=5Q4I64s64s32s2Q"
# (offset, magic, mount(2) type): what the drills' volumes carry.
MAGICS = ((1080, b"\x53\xef", "ext4"), (0, b"XFSB", "xfs"), (65600, b"_BHRfS_M", "btrfs"))

_libc = ctypes.CDLL(None, use_errno=True)


class BlockDeviceError(OSError):
    """A loop, mount or unmount call failed (errno and the step in the message)."""


def _raise(step: str) -> None:
    code = ctypes.get_errno()
    raise BlockDeviceError(code, f"{step}: {os.strerror(code)}")


def filesystem_type(fd: int) -> str:
    """The filesystem on an open block device, from its superblock magic."""
    for offset, magic, fstype in MAGICS:
        if os.pread(fd, len(magic), offset) == magic:
            return fstype
    raise BlockDeviceError(errno.EINVAL, "no ext4, xfs or btrfs filesystem found")


def mount_device(device: str, point: Path, fstype: str = "") -> None:
    """mount(2) `device` at `point` (type read from the superblock when not given)."""
    if not fstype:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fstype = filesystem_type(fd)
        finally:
            os.close(fd)
    point.mkdir(parents=True, exist_ok=True)
    if _libc.mount(device.encode(), str(point).encode(), fstype.encode(), 0, None) != 0:
        _raise(f"mount {device} at {point} ({fstype})")


def mount_image(image: Path, point: Path) -> str:
    """Attach `image` to a free loop device (autoclear) and mount it; return the device."""
    image_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        device, loop_fd = _attach(image, image_fd)
    finally:
        os.close(image_fd)
    try:
        mount_device(device, point, filesystem_type(loop_fd))
    except BaseException:
        with contextlib.suppress(OSError):
            fcntl.ioctl(loop_fd, LOOP_CLR_FD)
        raise
    finally:
        os.close(loop_fd)  # mounted: the mount holds it; not mounted: autoclear frees it
    return device


def _attach(image: Path, image_fd: int) -> tuple[str, int]:
    control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):  # another process may take the free device first: EBUSY
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop_fd, LOOP_SET_FD, image_fd)
            except OSError as exc:
                os.close(loop_fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise
            name = os.fsencode(str(image))[:63]
            info = struct.pack(
                LOOP_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, name, b"", b"", 0, 0
            )
            fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, info)
            return device, loop_fd
    finally:
        os.close(control)
    raise BlockDeviceError(errno.EBUSY, f"no free loop device for {image}")


def unmount(point: Path) -> None:
    """Unmount `point`; lazily when busy. Not mounted: nothing to do."""
    if not point.is_mount():
        return
    target = str(point).encode()
    if _libc.umount2(target, 0) != 0 and _libc.umount2(target, MNT_DETACH) != 0:
        _raise(f"unmount {point}")


def loops_backed_by(image: Path) -> list[str]:
    """Loop devices whose backing file is `image` (from sysfs, as `losetup -j` reads it)."""
    wanted = str(image)
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().removesuffix(" (deleted)") == wanted:
                found.append(f"/dev/{backing.parent.parent.name}")
    return found


def detach_loop(device: str) -> None:
    """LOOP_CLR_FD: detach now, or (still mounted) as soon as the last user closes it."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # not attached any more
            raise
    finally:
        os.close(fd)


def adopt_tree(root: Path) -> int:
    """Make the restored tree ours (uid/gid of this process) when we are not root.

    The daemon runs as `backupd`; the restored datadir belongs to `mysql` (0700), and the
    scratch server runs as us. Needs CAP_CHOWN, which the unit grants; ProtectSystem=strict
    confines it to writable paths (the drill's own mounts, the state directory). Returns the
    number of entries changed."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        return 0
    changed = 0

    def take(path: str) -> None:
        nonlocal changed
        info = os.lstat(path)
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)
            changed += 1

    take(str(root))
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:  # before os.walk lists them: they must be ours to read
            take(os.path.join(parent, name))
    return changed
