"""A minimal Debian root filesystem for booting a real systemd in a container, cached.

Built once by `mmdebstrap` from the package registry the host's apt already uses (the host's
sources files and its `Acquire::` settings are handed over as they are; no host is named
here), then kept in /var/cache/backupd-ci/rootfs-<key>, where the key hashes everything that
goes into it. Containers boot it with `--volatile=overlay`, so the cached tree is never
written to and one tree serves every run. From scratch: about a minute.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.testbed.util import run

CACHE = Path(os.environ.get("BACKUPD_CI_CACHE", "/var/cache/backupd-ci"))
# systemd as PID 1; what backupd's .deb depends on (python3, python3-venv, passwd); a MariaDB
# to lock; mount/losetup for the loop filesystem.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "passwd",
            "mariadb-server", "mount", "procps")  # fmt: skip
# Run after the packages are in: name resolution for `localhost` (mariadb-install-db needs
# it), and no distro MariaDB at boot (the tests start theirs on the loop filesystem).
CUSTOMIZE = (
    'printf "127.0.0.1 localhost\\n::1 localhost\\n" > "$1/etc/hosts"',
    'rm -f "$1/etc/systemd/system/multi-user.target.wants/mariadb.service"',
)
RECIPE = "1"  # bump when the recipe changes in a way the inputs below do not show


def host_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise RuntimeError("/etc/os-release names no VERSION_CODENAME")


def host_sources() -> list[Path]:
    """The host's enabled apt sources files: the rootfs uses the same registry."""
    found = []
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists() and any(
        line.strip() and not line.lstrip().startswith("#")
        for line in legacy.read_text().splitlines()
    ):
        found.append(legacy)
    parts = Path("/etc/apt/sources.list.d")
    found += sorted(p for p in parts.glob("*.list") if p.is_file())
    found += sorted(p for p in parts.glob("*.sources") if p.is_file())
    if not found:
        raise RuntimeError("the host has no apt sources to build a rootfs from")
    return found


def host_acquire_options() -> list[Path]:
    """The host's apt.conf.d files that set how apt reaches the registry (`Acquire::`)."""
    parts = Path("/etc/apt/apt.conf.d")
    return sorted(p for p in parts.iterdir() if p.is_file() and "Acquire::" in p.read_text())


def cache_key() -> str:
    digest = hashlib.sha256()
    for item in (RECIPE, host_suite(), *PACKAGES, *CUSTOMIZE):
        digest.update(item.encode() + b"\0")
    for path in host_sources() + host_acquire_options():
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (CI and a developer may share the machine's cache)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_rootfs(log: Path) -> Path:
    """The rootfs directory for the current inputs, built into the cache if missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"rootfs-{cache_key()}"
    done = target / ".backupd-rootfs-complete"
    if done.exists():
        return target
    with _locked(CACHE / "rootfs.lock"):
        if done.exists():  # built by whoever held the lock before us
            return target
        building = CACHE / f"{target.name}.building"
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES)]
        argv += [f"--aptopt={path}" for path in host_acquire_options()]
        argv += [f"--customize-hook={hook}" for hook in CUSTOMIZE]
        argv += ["--logfile", str(log), host_suite(), str(building)]
        argv += [str(path) for path in host_sources()]
        built = run(*argv, check=False, timeout=900)
        if built.returncode != 0:
            tail = log.read_text()[-3000:] if log.exists() else built.stderr[-3000:]
            raise RuntimeError(f"mmdebstrap failed ({built.returncode}):\n{tail}")
        (building / done.name).touch()
        building.rename(target)
    return target
