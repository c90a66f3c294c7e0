"""Filesystem freeze and thaw through the FIFREEZE/FITHAW ioctls on held descriptors.

The descriptor is opened before the freeze so that thawing never needs a path lookup on a
frozen filesystem. EINVAL from FITHAW means "not frozen", which thaw treats as success.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable
from dataclasses import dataclass

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


@dataclass(frozen=True)
class ThawResult:
    mount: str
    thawed: bool  # False: it was not frozen
    error: str = ""


def open_mount(mount: str) -> int:
    return os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def freeze_fd(fd: int) -> None:
    fcntl.ioctl(fd, FIFREEZE, 0)


def thaw_fd(fd: int) -> bool:
    """Thaw; True when it was frozen, False when it already was not."""
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


def thaw_all(mounts: Iterable[str]) -> list[ThawResult]:
    """Thaw every mount, continuing past failures; safe to run at any time."""
    results = []
    for mount in mounts:
        try:
            fd = open_mount(mount)
        except OSError as exc:
            results.append(ThawResult(mount, False, f"cannot open: {exc.strerror}"))
            continue
        try:
            results.append(ThawResult(mount, thaw_fd(fd)))
        except OSError as exc:
            results.append(ThawResult(mount, False, f"FITHAW failed: {exc.strerror}"))
        finally:
            os.close(fd)
    return results
