"""This host: mounts the snapshot may freeze (the coordinator's own refusal rules), the spool's
free space and filesystem, and the clock (binlog timestamps are restore targets)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from backupd.check.result import Result, fail, ok, warn
from backupd.config import Config
from backupd.snapshot import freezer
from backupd.snapshot.coordinator import own_paths

# Filesystems whose FIFREEZE is known to work; others (tmpfs, nfs, overlay...) refuse it.
FREEZABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "nilfs2", "gfs2", "ocfs2"}
CLOCK_WARN_SECONDS = 0.5
CLOCK_FAIL_SECONDS = 30.0
TOOL_TIMEOUT = 5.0
CLOCK_FIX = "run chrony (Amazon Time Sync: server 169.254.169.123) or systemd-timesyncd"


def mount_fstype(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The filesystem type of the mount holding `path` (the longest matching mount point)."""
    target = os.path.realpath(path)
    best, fstype = "", ""
    for line in Path(mountinfo).read_text().splitlines():
        fields = line.split()
        mount_point = fields[4].encode().decode("unicode_escape")
        kind = fields[fields.index("-") + 1]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, kind
    return fstype


def check_mounts(config: Config) -> list[Result]:
    section = config.snapshot
    if not section.enabled:
        return []  # nothing to freeze; enabled with no mounts is config.combination's line
    results = []
    own = own_paths(config)
    for mount in section.mounts:
        name = f"local.mount[{mount}]"
        problems = freezer.refusals([mount], own, include_stdout=False)
        if problems:
            results.append(
                fail(
                    name,
                    "; ".join(p.removeprefix(f"{mount}: ") for p in problems),
                    "list only dedicated data filesystems (mount points, not / and not "
                    "where backupd writes) in snapshot.mounts",
                )
            )
            continue
        fstype = mount_fstype(mount)
        if fstype in FREEZABLE:
            results.append(ok(name, f"{fstype}, may be frozen"))
        else:
            results.append(
                fail(
                    name,
                    f"{fstype} filesystem: FIFREEZE is not supported there",
                    "put the data on ext4 or xfs, or set crash_consistent_fallback = true",
                )
            )
    return results


def check_spool(config: Config) -> list[Result]:
    if not config.binlog.enabled:
        return []
    spool = config.daemon.spool_dir
    existing = Path(spool)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    used = sum(f.stat().st_size for f in Path(spool).glob("**/*") if f.is_file())
    need = config.binlog.spool_max_bytes - used
    fstype = mount_fstype(str(existing))
    detail = f"{free / 2**30:.1f} GiB free on {fstype} for spool_max_bytes " \
        f"{config.binlog.spool_max_bytes / 2**30:.1f} GiB"  # fmt: skip
    fix = f"free space under {spool}, or lower binlog.spool_max_bytes"
    if free < 2 * config.binlog.segment_max_bytes:
        return [fail("local.spool", detail, fix)]
    if free < need:
        return [warn("local.spool", detail + ": it cannot fill up as allowed", fix)]
    if fstype == "tmpfs":
        return [
            warn(
                "local.spool",
                detail + "; tmpfs loses segments not yet uploaded at a reboot",
                "put daemon.spool_dir on a disk (default /var/cache/backupd/spool)",
            )
        ]
    return [ok("local.spool", detail)]


def parse_chrony(text: str) -> float | None:
    """Offset from `chronyc tracking` ("System time : 0.000012 seconds fast of NTP time")."""
    match = re.search(r"System time\s*:\s*([\d.]+) seconds (fast|slow)", text)
    if not match:
        return None
    value = float(match[1])
    return value if match[2] == "fast" else -value


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def parse_timesync_offset(text: str) -> float | None:
    """Offset from `timedatectl timesync-status` ("Offset: -1.234ms")."""
    match = re.search(r"Offset:\s*([+-]?[\d.]+)(us|ms|s|min)\b", text)
    return float(match[1]) * _UNITS[match[2]] if match else None


def parse_timesync(text: str) -> bool | None:
    """`timedatectl show -p NTPSynchronized`: NTPSynchronized=yes|no."""
    match = re.search(r"NTPSynchronized=(yes|no)", text)
    return None if match is None else match[1] == "yes"


Runner = Callable[[list[str]], str | None]


def run_tool(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def check_clock(run: Runner = run_tool) -> Result:
    """chrony first, then systemd-timesyncd; a clock nobody vouches for is a warning."""
    chrony = run(["chronyc", "tracking"])
    if chrony and (offset := parse_chrony(chrony)) is not None:
        return _offset("chrony", offset)
    status = run(["timedatectl", "timesync-status"])
    if status and (offset := parse_timesync_offset(status)) is not None:
        return _offset("systemd-timesyncd", offset)
    shown = run(["timedatectl", "show", "-p", "NTPSynchronized"])
    synced = parse_timesync(shown) if shown else None
    if synced:
        return ok("local.clock", "systemd-timesyncd: synchronized")
    if synced is False:
        return warn("local.clock", "systemd-timesyncd: not synchronized", CLOCK_FIX)
    return warn(
        "local.clock", "clock offset unknown (neither chronyc nor timedatectl answered)", CLOCK_FIX
    )


def _offset(source: str, offset: float) -> Result:
    detail = f"{source}: {abs(offset):.3f} s {'fast' if offset > 0 else 'slow'}"
    if abs(offset) >= CLOCK_FAIL_SECONDS:
        return fail("local.clock", detail + ": restore-by-time targets would be off", CLOCK_FIX)
    if abs(offset) >= CLOCK_WARN_SECONDS:
        return warn("local.clock", detail, CLOCK_FIX)
    return ok("local.clock", detail)


def check(config: Config) -> list[Result]:
    return [*check_mounts(config), *check_spool(config), check_clock()]
