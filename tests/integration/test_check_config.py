"""`backupd check-config`, the real binary, on the bed's real parts: the bed's own config
passes; each way a config can lie is refused in exactly one line naming key, value and fix.

The bed's config has a real option file (the session MariaDB's), a real loop-mounted data
filesystem in `snapshot.mounts`, and a file:// repository on another filesystem.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients import BIN_DIR
from tests.conftest import ConfigFactory
from tests.integration.test_snapshot_local import snap_config, thawed  # noqa: F401
from tests.testbed.loopfs import LoopFilesystem

pytestmark = pytest.mark.integration

Mutation = Callable[[dict[str, Any], LoopFilesystem, Path], None]


def check_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """As an operator runs it: the inherited environment (CI's BACKUPD_REQUIRE_INTEGRATION
    included, which is no override and must not matter) plus `env`."""
    return subprocess.run(
        [str(BIN_DIR / "backupd"), "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
        timeout=60,
    )


def test_the_bed_config_passes(snap_config: dict[str, Any], write_config: ConfigFactory) -> None:  # noqa: F811
    snap_config["snapshot"]["enabled"] = True
    result = check_config(write_config(snap_config))
    assert result.returncode == 0, result.stderr
    assert ": ok (storage file://" in result.stdout


def yes_string(config: dict[str, Any], _fs: LoopFilesystem, _work: Path) -> None:
    config.setdefault("binlog", {})["enabled"] = "yes"


def ebs_without_mounts(config: dict[str, Any], _fs: LoopFilesystem, _work: Path) -> None:
    config["snapshot"].update({"enabled": True, "provider": "ebs", "mounts": []})


def missing_option_file(config: dict[str, Any], _fs: LoopFilesystem, work: Path) -> None:
    config["mysql"]["option_file"] = str(work / "no-such.cnf")


def repository_on_the_data_filesystem(
    config: dict[str, Any], fs: LoopFilesystem, _work: Path
) -> None:
    config["storage"]["url"] = f"file://{fs.mount_point}/backups"


def plain_directory_as_mount(config: dict[str, Any], _fs: LoopFilesystem, work: Path) -> None:
    (work / "not-a-mount").mkdir(exist_ok=True)
    config["snapshot"]["mounts"] = [str(work / "not-a-mount")]


@pytest.mark.parametrize(
    ("mutate", "env", "line"),
    [
        (
            yes_string,
            {},
            'binlog.enabled = "yes": expected true or false (a TOML boolean, not a string or '
            "number); write enabled = true",
        ),
        (
            ebs_without_mounts,
            {},
            'snapshot.mounts = []: snapshot.enabled = true with provider "ebs", but nothing to '
            'freeze and snapshot; list the data filesystems, e.g. mounts = ["/var/lib/mysql"], '
            "or set snapshot.enabled = false",
        ),
        (
            None,
            {"BACKUPD_STORAGE_URL": "s3://bucket/db1"},
            "BACKUPD_STORAGE_URL=s3://bucket/db1: names no config key; did you mean "
            "BACKUPD_STORAGE__URL (storage.url)?",
        ),
        (
            None,
            {"BACKUPD_SNAPSHOT__MOUNTS": "/data"},
            "snapshot.mounts (from BACKUPD_SNAPSHOT__MOUNTS=/data): expected a list; set "
            "BACKUPD_SNAPSHOT__MOUNTS='[\"/data\"]' (the value is read as TOML)",
        ),
        (missing_option_file, {}, 'no-such.cnf": no such file; without it backupd would log in'),
        (repository_on_the_data_filesystem, {}, "the repository is on the database's filesystem"),
        (plain_directory_as_mount, {}, 'not-a-mount": '),  # on / or not a mount point
    ],
)
def test_each_lie_is_one_line(
    snap_config: dict[str, Any],  # noqa: F811
    thawed: LoopFilesystem,  # noqa: F811
    workdir: Path,
    write_config: ConfigFactory,
    mutate: Mutation | None,
    env: dict[str, str],
    line: str,
) -> None:
    config = copy.deepcopy(snap_config)
    if mutate is not None:
        mutate(config, thawed, workdir)
    result = check_config(write_config(config), **env)
    assert result.returncode == 78, result.stdout
    header, *problems = result.stderr.splitlines()
    assert header.endswith(": invalid configuration")
    assert len(problems) == 1, result.stderr
    assert line in problems[0], problems[0]
