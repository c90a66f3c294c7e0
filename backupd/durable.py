"""Durable file writes: after a crash a file is either whole or absent, never torn.

Write a temporary sibling, fsync it, rename it over the target, fsync the directory. Readers
skip names starting with TMP_PREFIX; recovery may delete them.
"""

from __future__ import annotations

import os
from pathlib import Path

from backupd.private import FILE_MODE

TMP_PREFIX = ".tmp-"


def write_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` durably; on failure the old content (if any) stays.

    The file is 0600: what is written this way (spool segments, repository objects) is data
    only the service user may read (see backupd/private.py).
    """
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path | str) -> None:
    """Make a rename or a new name in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path | str) -> None:
    """Flush a file written elsewhere (a copy made by another call) to stable storage."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
