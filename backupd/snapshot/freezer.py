"""Freeze a set of mounts under the guard of the watchdog process, and thaw them always.

Descriptors are opened, and the watchdog is started and has answered, before anything is
frozen; thawing then needs no path lookup and no new process. Mounts that must never be
frozen (`/`, the filesystems the daemon writes to or runs from, non-mount-points) are refused
here at run time, whatever the config said.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from backupd import freeze, freeze_record
from backupd.errors import FreezeFailed, FreezeRefused, ThawFailed
from backupd.log import get_logger
from backupd.snapshot import watchdog  # stdlib only: its exit codes, not its code path

_log = get_logger("freezer")

WATCHDOG_SCRIPT = str(Path(__file__).with_name("watchdog.py"))
WATCHDOG_COMMAND = [sys.executable, "-I", "-S", "-B", WATCHDOG_SCRIPT]  # isolated, stdlib only
WATCHDOG_READY_SECONDS = 10.0
LOG_FD = 1  # the watchdog reports on our stdout: refusals() keeps it off every frozen mount


def device_of(path: str) -> int:
    """st_dev of `path`, or of its nearest existing ancestor (a dir not created yet)."""
    current = Path(path)
    while True:
        try:
            return current.stat().st_dev
        except FileNotFoundError:
            if current.parent == current:
                raise
            current = current.parent


def stdout_device() -> int | None:
    """The filesystem our log goes to when stdout is a plain file (not a pipe or journald)."""
    try:
        st = os.fstat(1)
    except OSError:
        return None
    return st.st_dev if (st.st_mode & 0o170000) == 0o100000 else None


def refusals(
    mounts: Iterable[str], own_paths: dict[str, str], include_stdout: bool = True
) -> list[str]:
    """Why each mount must not be frozen (empty: all fine). `own_paths`: what -> path."""
    problems = []
    root_dev = os.stat("/").st_dev
    own = {what: device_of(path) for what, path in own_paths.items()}
    log_dev = stdout_device() if include_stdout else None
    if log_dev is not None:
        own["the daemon's log (stdout)"] = log_dev
    for mount in mounts:
        try:
            dev = os.stat(mount).st_dev
        except OSError as exc:
            problems.append(f"{mount}: cannot stat: {exc.strerror}")
            continue
        if os.path.realpath(mount) == "/" or dev == root_dev:
            problems.append(f"{mount}: is on the root filesystem; freezing / hangs the host")
            continue  # one cause, one line: what else lives on / follows from it
        if not os.path.ismount(mount):
            problems.append(f"{mount}: not a mount point")
            continue
        for what, own_dev in own.items():
            if own_dev == dev:
                problems.append(f"{mount}: holds {what}; the daemon would block on itself")
    return problems


def check_mounts(mounts: list[str], own_paths: dict[str, str]) -> None:
    problems = refusals(mounts, own_paths)
    if problems:
        raise FreezeRefused(reason="; ".join(problems))


class Watchdog:
    """The independent thawing process; see watchdog.py for its protocol."""

    def __init__(self, fds: list[int], max_seconds: float) -> None:
        control_r, self._control_w = os.pipe()
        self._ack_r, ack_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [*WATCHDOG_COMMAND, str(max_seconds),
                 str(control_r), str(ack_w), *map(str, fds)],
                pass_fds=(control_r, ack_w, *fds),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=LOG_FD,
                cwd="/", start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(control_r)
            os.close(ack_w)
        self.fired = False
        self.thaw_failed = False  # it had to thaw and a FITHAW failed: maybe still frozen
        if self._read_ack(WATCHDOG_READY_SECONDS) != b"R":
            self.close()
            raise FreezeFailed(mount="*", reason="the freeze watchdog did not start")

    def _read_ack(self, timeout: float) -> bytes:
        readable, _, _ = select.select([self._ack_r], [], [], timeout)
        return os.read(self._ack_r, 1) if readable else b""

    def armed(self) -> None:
        os.write(self._control_w, b"F")

    def thawed(self) -> None:
        """Tell it we thawed (it exits); reaping waits until after the unlock."""
        with contextlib.suppress(OSError):  # it already exited (it fired, or it died)
            os.write(self._control_w, b"T")

    def close(self) -> None:
        """Reap it, and learn whether it had to thaw before we did."""
        self.thawed()
        ack = self._read_ack(0)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        code = self.process.returncode
        self.thaw_failed = ack == b"E" or code == watchdog.EXIT_THAW_FAILED
        self.fired = self.thaw_failed or ack == b"X" or code == watchdog.EXIT_CLOCK
        os.close(self._control_w)
        os.close(self._ack_r)


class FrozenMounts:
    """prepare() (descriptors, watchdog) ahead of the lock; warm_up() right before it (the
    kernel's slow first freeze, outside the lock); `with`: freeze in order on enter,
    thaw in reverse on exit (always); close() reaps the watchdog once commits flow again.
    With `record`, prepare() writes the mounts there (before the lock: no fsync while commits
    wait) and close() removes it unless a thaw failed (freeze_record: what `thaw-all` finds)."""

    def __init__(
        self, mounts: list[str], max_freeze_seconds: float, record: Path | None = None
    ) -> None:
        self.mounts = mounts
        self.max_freeze_seconds = max_freeze_seconds
        self.record = record
        self.fds: list[int] = []
        self.frozen: list[int] = []
        self.watchdog: Watchdog | None = None
        self.frozen_at = 0.0
        self.thawed_at = 0.0
        self.watchdog_fired = False
        self.thaw_failed = False  # a FITHAW failed (ours, the deadline's or the watchdog's)
        self.left_frozen = False  # ours or the deadline's failed: a mount may still be
        # frozen, so the freeze record is kept for `thaw-all` (a watchdog failure followed
        # by our own good thaw leaves nothing frozen)
        self.aborted = False  # thaw_now() ran: freeze nothing more
        self.warm_up_seconds = 0.0  # how long warm_up() took (commits still flowing)
        self.fifreeze_seconds = 0.0  # how long the FIFREEZE calls under the lock took

    def prepare(self) -> None:
        if self.watchdog is not None:
            return
        try:
            for mount in self.mounts:
                self.fds.append(freeze.open_mount(mount))
            self.watchdog = Watchdog(self.fds, self.max_freeze_seconds)
            self._write_record()
        except BaseException:
            self.close()
            raise

    def warm_up(self) -> None:
        """Freeze and thaw every mount once, right before the commit lock is taken.

        The first FIFREEZE after a quiet while waits out RCU grace periods in the kernel
        (tens of ms, writers blocked for most of them); one that follows a thaw within a few
        ms does not (bench/freeze_cost.py). Paying that wait here, before commits are
        blocked, leaves the freeze under the lock at about a millisecond. Several mounts warm
        up at once, so writers wait one freeze, not N. The watchdog is armed from here on. A
        mount that cannot be frozen is left to the real freeze to report."""
        self.prepare()
        assert self.watchdog is not None
        self.watchdog.armed()
        started = time.perf_counter()
        pairs = list(zip(self.mounts, self.fds, strict=True))
        try:
            if len(pairs) == 1:
                self._freeze_and_thaw(*pairs[0])
                return
            with ThreadPoolExecutor(len(pairs), thread_name_prefix="freeze-warm-up") as pool:
                for done in [pool.submit(self._freeze_and_thaw, *pair) for pair in pairs]:
                    done.result()
        finally:
            self.warm_up_seconds = time.perf_counter() - started

    def _freeze_and_thaw(self, mount: str, fd: int) -> None:
        if self.aborted:  # the deadline passed: freeze nothing more
            return
        try:
            freeze.freeze_fd(fd)
        except OSError as exc:
            _log.debug("warm-up freeze failed", mount=mount, error=str(exc))
            return
        self._fithaw([fd])

    def __enter__(self) -> FrozenMounts:
        self.prepare()
        assert self.watchdog is not None
        try:
            self.watchdog.armed()
            self.frozen_at = time.time()
            started = time.perf_counter()
            for mount, fd in zip(self.mounts, self.fds, strict=True):
                try:
                    freeze.freeze_fd(fd)
                except OSError as exc:
                    raise FreezeFailed(mount=mount, reason=exc.strerror or str(exc)) from exc
                self.frozen.append(fd)
                if self.aborted:  # the deadline thawed meanwhile; this one too, below
                    raise FreezeFailed(mount=mount, reason="the lock deadline passed")
            self.fifreeze_seconds = time.perf_counter() - started
        except BaseException:
            self._thaw()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._thaw()

    @property
    def seconds(self) -> float:
        return max(0.0, self.thawed_at - self.frozen_at) if self.frozen_at else 0.0

    def _write_record(self) -> None:
        if self.record is None:
            return
        try:
            freeze_record.write_record(self.record, self.mounts)
        except OSError as exc:  # no record, no freeze: a crash now would leave no trace
            raise FreezeFailed(
                mount=",".join(self.mounts), reason=f"cannot write {self.record}: {exc}"
            ) from exc

    def _clear_record(self) -> None:
        if self.record is None:
            return
        try:
            freeze_record.clear_record(self.record)
        except OSError as exc:  # harmless: thaw-all finds the mounts not frozen
            _log.warning("cannot remove the freeze record", path=str(self.record), error=str(exc))

    def _fithaw(self, fds: list[int]) -> None:
        """FITHAW each of `fds` (last frozen first); ThawFailed naming every mount that
        failed ("not frozen" counts as thawed), after trying them all."""
        mount_of = dict(zip(self.fds, self.mounts, strict=False))
        errors = []
        for fd in reversed(fds):
            try:
                freeze.thaw_fd(fd)
            except OSError as exc:
                errors.append(f"{mount_of.get(fd, fd)}: {exc.strerror or exc}")
        if errors:
            self.thaw_failed = self.left_frozen = True
            _log.error("thaw failed; the mount may still be frozen", failures="; ".join(errors))
            raise ThawFailed(mount=",".join(self.mounts), reason="; ".join(errors))

    def _thaw(self) -> None:
        frozen = [fd for fd in self.fds if fd in self.frozen]
        try:
            self._fithaw(frozen)
        finally:
            self.thawed_at = time.time()
            self.frozen.clear()
            if self.watchdog is not None:
                self.watchdog.thawed()

    def close(self) -> None:
        """Reap the watchdog and close the descriptors (idempotent; thaws first if needed)."""
        if self.frozen:
            with contextlib.suppress(ThawFailed):
                self._thaw()
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog_fired = self.watchdog.fired
            if self.watchdog.thaw_failed:
                self.thaw_failed = True
                _log.error("the freeze watchdog could not thaw; the mount may still be frozen")
            self.watchdog = None
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        if not self.left_frozen:
            self._clear_record()

    def thaw_now(self) -> None:
        """From the deadline thread: thaw every mount at once (FITHAW on held descriptors is
        safe beside the owner's thaw; "not frozen" counts as thawed)."""
        self.aborted = True
        self._fithaw(list(self.fds))
