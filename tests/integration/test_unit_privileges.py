"""The unit's privileges are enough to freeze: an unprivileged uid holding only the unit's
ambient capabilities (under NoNewPrivileges) can FIFREEZE/FITHAW a loop mount; without them
it cannot. Runs the child through setpriv with the system Python (stdlib only), because the
test venv's interpreter may live where the unprivileged user cannot read.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.freeze import FIFREEZE, FITHAW
from tests.testbed.loopfs import LoopFilesystem
from tests.tools import require_tool

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "backupd.service"
NOBODY = "65534"
CHILD = f"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
try:
    fcntl.ioctl(fd, {FIFREEZE:#x}, 0)
except OSError as exc:
    print("freeze refused", exc.errno)
    sys.exit(3)
fcntl.ioctl(fd, {FITHAW:#x}, 0)
print("froze and thawed")
"""


def unit_capabilities() -> str:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    caps = parser["Service"]["AmbientCapabilities"].split()
    return ",".join(f"+{cap.lower().removeprefix('cap_')}" for cap in caps)


@pytest.fixture
def small_fs() -> Iterator[LoopFilesystem]:
    base = Path(tempfile.mkdtemp(prefix="backupd-caps-"))
    base.chmod(0o755)  # the unprivileged child must reach the mount point
    fs = LoopFilesystem(base / "caps.img", base / "mnt", size_mb=16).create()
    try:
        yield fs
    finally:
        fs.destroy()  # thaws first
        shutil.rmtree(base, ignore_errors=True)


def run_unprivileged(mount: Path, caps: str) -> subprocess.CompletedProcess[str]:
    setpriv = require_tool("setpriv", "util-linux")
    argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        argv += [
            f"--inh-caps=-all,{caps}",
            f"--ambient-caps=-all,{caps}",
            f"--bounding-set=-all,{caps}",
        ]
    argv += ["--no-new-privs", "/usr/bin/python3", "-c", CHILD, str(mount)]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_unit_capabilities_suffice_to_freeze(small_fs: LoopFilesystem) -> None:
    caps = unit_capabilities()
    assert caps == "+sys_admin,+chown"  # chown: drills hand the restored tree to backupd
    granted = run_unprivileged(small_fs.mount_point, caps)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert "froze and thawed" in granted.stdout


def test_without_the_capability_freezing_is_refused(small_fs: LoopFilesystem) -> None:
    refused = run_unprivileged(small_fs.mount_point, "")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "freeze refused 1" in refused.stdout  # EPERM
