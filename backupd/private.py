"""Data only the service user can read: 0700 directories, 0600 files.

The spool, the state directory and a local (`file://`) repository hold every row change the
binlog carried. The control socket's reader group gets answers (status, metrics), never
files, so none of them may be group- or world-readable, whatever the umask the daemon was
started with or the modes an older version left.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backupd.log import get_logger

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600

_log = get_logger("private")


def private_dir(path: Path | str) -> Path:
    """Create `path` and its missing parents as 0700; tighten it when it exists and is ours."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # another thread made it first
        else:
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    tighten(path)
    return path


def tighten(path: Path) -> None:
    """Take group and other access away from a directory we own; warn if it is not ours."""
    info = path.stat()
    if not stat.S_IMODE(info.st_mode) & 0o077:
        return
    if info.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(info.st_mode) & DIR_MODE)
        _log.info("made private", path=str(path), mode=oct(stat.S_IMODE(info.st_mode) & DIR_MODE))
    else:
        _log.warning(
            "data directory is open to others and not ours to tighten",
            path=str(path),
            mode=oct(stat.S_IMODE(info.st_mode)),
            owner=info.st_uid,
        )


def make_data_private(directories: list[str]) -> None:
    """At daemon start: a private umask for all the daemon writes, and private data roots."""
    os.umask(PRIVATE_UMASK)
    for directory in directories:
        try:
            private_dir(directory)
        except OSError as exc:  # the component that needs it reports it again, in status
            _log.error("cannot prepare a data directory", path=directory, error=str(exc))
