"""The drill's resource record: written before creating, one drill at a time, cleaned after a
kill; the EBS drill's refusal to touch a production mount; the drill request's checks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backupd.errors import DrillFailed, DrillRunning, UsageError
from backupd.restore import blockdev
from backupd.restore.drill_resources import DrillLedger, clean_up
from backupd.restore.ebs_drill import refuse_production
from backupd.restore.service import drill_request
from tests.tools import REQUIRE_INTEGRATION


def test_entries_are_recorded_and_forgotten(tmp_path: Path) -> None:
    ledger = DrillLedger(tmp_path / "drill")
    with ledger.held():
        ledger.run_id = "drill-1"
        ledger.add("volume", "vol-1", instance="i-1")
        ledger.add("mount", "/x")
        assert [(e["kind"], e["id"], e["run_id"]) for e in ledger.entries()] == [
            ("volume", "vol-1", "drill-1"),
            ("mount", "/x", "drill-1"),
        ]
        ledger.remove("volume", "vol-1")
        ledger.remove("mount", "/x")
        assert not ledger.path.exists()  # empty: no record file at all
    assert list((tmp_path / "drill").iterdir()) == []  # nor a lock file


def test_a_second_holder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    ledger = DrillLedger(tmp_path)
    with ledger.held():
        code = (
            "import sys; from pathlib import Path; from backupd.restore.drill_resources import "
            "DrillLedger\ntry:\n with DrillLedger(Path(sys.argv[1])).held(): sys.exit(0)\n"
            "except Exception as e: print(type(e).__name__); sys.exit(1)"
        )
        other = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
        )
        assert other.returncode == 1 and "DrillRunning" in other.stdout, other.stderr
        with pytest.raises(DrillRunning), DrillLedger(tmp_path).held():
            pass  # flock is per open file: a second open in this process is refused too


def test_clean_up_removes_what_a_killed_drill_left(tmp_path: Path) -> None:
    left = tmp_path / "run-dir"
    (left / "binlogs").mkdir(parents=True)
    ledger = DrillLedger(tmp_path / "drill")
    with ledger.held():
        ledger.run_id = "drill-2"
        ledger.add("dir", str(left))
        ledger.add("mount", str(tmp_path / "never-mounted"))
        ledger.add("run", "drill-2")
    with ledger.held():
        done = clean_up(ledger, None, "host")  # no EC2 on this host: the run entry just goes
        assert done == [f"removed {left}"]
        assert ledger.entries() == []
    assert not left.exists()


def test_a_failing_removal_stays_recorded(tmp_path: Path) -> None:
    ledger = DrillLedger(tmp_path)
    with ledger.held():
        ledger.add("volume", "vol-9")
        assert clean_up(ledger, None, "host") == []  # no EC2 endpoint: cannot delete it
        assert [e["id"] for e in ledger.entries()] == ["vol-9"]


def test_the_scratch_path_and_device_of_a_production_mount_are_refused(tmp_path: Path) -> None:
    device = tmp_path / "dev"
    device.touch()
    with pytest.raises(DrillFailed, match="overlaps configured mount"):
        refuse_production(str(device), Path("/data/drill/mnt-0"), ["/data"])
    with pytest.raises(DrillFailed, match="overlaps configured mount"):
        refuse_production(str(device), Path("/srv"), ["/srv/data"])
    production = tmp_path / "prod"
    production.mkdir()
    if os.geteuid() != 0:
        if REQUIRE_INTEGRATION:  # CI runs as root: this half must not go missing there
            pytest.fail("making a block device node needs root")
        pytest.skip("making a block device node needs root")
    same = tmp_path / "same-device"  # a node for the block device production is on
    os.mknod(same, stat.S_IFBLK | 0o600, os.stat(production).st_dev)
    with pytest.raises(DrillFailed, match=f"device of configured mount {production}"):
        refuse_production(str(same), tmp_path / "mnt", [str(production)])
    with pytest.raises(DrillFailed, match="already mounted at"):
        refuse_production(str(same), tmp_path / "mnt", [])


def test_filesystem_type_from_the_superblock(tmp_path: Path) -> None:
    image = tmp_path / "xfs"
    image.write_bytes(b"XFSB" + bytes(2000))
    fd = os.open(image, os.O_RDONLY)
    try:
        assert blockdev.filesystem_type(fd) == "xfs"
    finally:
        os.close(fd)
    blank = tmp_path / "blank"
    blank.write_bytes(bytes(70000))
    fd = os.open(blank, os.O_RDONLY)
    try:
        with pytest.raises(blockdev.BlockDeviceError):
            blockdev.filesystem_type(fd)
    finally:
        os.close(fd)


def test_drill_request_is_checked() -> None:
    assert drill_request({}) == {}
    assert drill_request({"target": "latest", "server": None}) == {"target": "latest"}
    with pytest.raises(UsageError):
        drill_request({"target": "yesterday-ish"})
    with pytest.raises(UsageError, match="unknown"):
        drill_request({"work_dir": "/tmp"})
    with pytest.raises(UsageError, match="integer"):
        drill_request({"timeline": "2"})
