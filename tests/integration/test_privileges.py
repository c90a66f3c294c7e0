"""The socket's reader group gets status, never files: a throwaway reader-group user can run
`backupctl status` but cannot open anything under the spool, the state directory or the
file:// repository; a user outside the group is refused."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients import backupctl_json, in_child_as, run_as
from tests.conftest import ConfigFactory
from tests.testbed.daemon import DaemonProcess

pytestmark = pytest.mark.integration

StartDaemon = Callable[..., DaemonProcess]
NOBODY = (65534, 65534)


@pytest.fixture
def reader() -> Iterator[tuple[str, int, int]]:
    """A system user whose group is the socket's reader group; removed afterwards."""
    name = f"bkdread{os.getpid() % 100000}"
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    try:
        useradd = ["useradd", "--system", "--no-create-home", "--gid", name]
        subprocess.run(
            [*useradd, "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True
        )
        try:
            yield name, pwd.getpwnam(name).pw_uid, grp.getgrnam(name).gr_gid
        finally:
            subprocess.run(["userdel", name], check=False, capture_output=True)
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def everything_under(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        found.append(root)
        for dirpath, dirnames, filenames in os.walk(root):
            found += [Path(dirpath) / name for name in dirnames + filenames]
    return found


def what_opens_as(uid: int, gid: int, paths: list[Path]) -> list[str]:
    """Which paths a child running as uid/gid (no other groups) can open or list."""

    def try_all() -> list[str]:
        opened = []
        for path in paths:
            try:
                if path.is_dir():
                    os.listdir(path)
                else:
                    os.close(os.open(path, os.O_RDONLY))
                opened.append(str(path))
            except PermissionError:
                pass
        return opened

    result: list[str] = in_child_as(uid, gid, try_all)
    return result


def test_reader_group_gets_status_but_no_data(
    base_config: dict[str, Any],
    write_config: ConfigFactory,
    start_daemon: StartDaemon,
    reader: tuple[str, int, int],
    workdir: Path,
) -> None:
    name, uid, gid = reader
    base_config["daemon"]["socket_group"] = name
    sock = base_config["daemon"]["socket"]
    start_daemon(write_config(base_config))
    for _ in range(200):  # each round is a probe of the live server, not a sleep
        _code, doc = backupctl_json("--socket", sock, "probe")
        if doc.get("binlog", {}).get("archived_coordinate"):
            break
    else:
        raise AssertionError(f"nothing archived: {doc.get('binlog')}")

    roots = [workdir / "state", workdir / "spool", workdir / "repo"]
    paths = everything_under(roots)
    assert any(path.is_file() for path in paths if path.is_relative_to(workdir / "repo"))
    assert (workdir / "state" / "binlog.json").is_file()
    for path in paths:
        info = path.stat()
        expected = 0o700 if path.is_dir() else 0o600
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (expected, os.geteuid()), path
    assert what_opens_as(uid, gid, paths) == []

    code, out, err = run_as(uid, gid, ["--socket", sock, "--json", "status"])
    assert code in (0, 4), err
    assert "binlog" in json.loads(out)
    code, out, err = run_as(*NOBODY, ["--socket", sock, "--json", "status"])
    assert code == 5, out + err
