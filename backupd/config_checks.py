"""What `check-config` refuses beyond the model's types and limits.

Two kinds, each problem one line naming the key, the value and the fix:
- combinations that cannot work whatever the host (`impossible_combinations`, pure; the
  daemon refuses them at start and on reload too);
- facts about this host, read without side effects (`host_problems`): the MySQL option file,
  a `file://` repository on the database's filesystem, mounts that must never be frozen.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import PurePosixPath

from backupd.config import Config
from backupd.config_messages import toml_literal

REPOSITORY = "the repository"


def impossible_combinations(config: Config) -> list[str]:
    problems = []
    snapshot = config.snapshot
    if snapshot.enabled and not snapshot.mounts:
        problems.append(
            f"snapshot.mounts = []: snapshot.enabled = true with provider "
            f'"{snapshot.provider}", but nothing to freeze and snapshot; list the data '
            'filesystems, e.g. mounts = ["/var/lib/mysql"], or set snapshot.enabled = false'
        )
    return problems


def host_problems(config: Config, datadir: str | None = None) -> list[str]:
    """Problems only this host can show; `datadir` is the server's, when known (online)."""
    return (
        option_file_problems(config) + repository_problems(config, datadir) + mount_problems(config)
    )


def option_file_problems(config: Config) -> list[str]:
    path = config.mysql.option_file
    if not path:
        return []  # explicitly none: the account needs no password (e.g. unix_socket auth)
    head = f"mysql.option_file = {toml_literal(path)}"
    if not os.path.exists(path):
        return [
            f"{head}: no such file; without it backupd would log in with no password; create "
            "it with a [client] section (user, password), owner backupd, mode 0600"
        ]
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        return [
            f"{head}: not a file {getpass.getuser()} can read; make it a file owned by "
            "backupd with mode 0600, and run check-config as root or backupd"
        ]
    return []


def repository_problems(config: Config, datadir: str | None = None) -> list[str]:
    """A file:// repository must not share a filesystem with the database it protects."""
    from backupd.snapshot.freezer import device_of

    url = config.storage.url
    if not url.startswith("file://"):
        return []
    repository = url.removeprefix("file://")
    data = {f"snapshot.mounts {json.dumps(m)}": m for m in config.snapshot.mounts}
    if datadir:
        data[f"the server's datadir {datadir}"] = datadir
    root = os.stat("/").st_dev
    for what, path in data.items():
        same = PurePosixPath(repository).is_relative_to(PurePosixPath(path))
        if not same and os.path.exists(path):
            device = os.stat(path).st_dev
            # a mount on / is refused on its own line (mount_problems): one cause, one line
            refused = path in config.snapshot.mounts and (
                device == root or not os.path.ismount(path)
            )
            same = not refused and device_of(repository) == device
        if same:
            return [
                f"storage.url = {toml_literal(url)}: the repository is on the database's "
                f"filesystem ({what}), so one lost disk loses both; use s3:// or a path on "
                "another filesystem"
            ]
    return []


def mount_problems(config: Config) -> list[str]:
    """Mounts that must never be frozen, judged by device; mounts not there yet are skipped
    (the daemon checks them again before every run)."""
    from backupd.snapshot.coordinator import own_paths
    from backupd.snapshot.freezer import refusals

    own = own_paths(config)
    own.pop(REPOSITORY, None)  # repository_problems names that cause on its own line
    present = [mount for mount in config.snapshot.mounts if os.path.exists(mount)]
    lines = []
    for problem in refusals(present, own, include_stdout=False):
        mount, _, reason = problem.partition(": ")
        lines.append(
            f"snapshot.mounts entry {json.dumps(mount)}: {reason}; list only the mount "
            "points of the database's own data filesystems"
        )
    return lines
