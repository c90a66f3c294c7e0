"""The freeze watchdog: a separate process that thaws the frozen mounts no matter what.

Run as `python -I -S -B watchdog.py MAX_SECONDS CONTROL_FD ACK_FD MOUNT_FD...` with the mount
descriptors already open (pass_fds), in a session of its own. It imports only standard modules,
writes no file and logs only after it thawed, so it can never block on the filesystems it
guards. It ignores SIGTERM, SIGHUP, SIGINT and their kind (SIGTSTP too), so a `systemctl
stop` or restart (or the OOM killer's stop of the unit) that reaches every process of the
service leaves it running: only SIGKILL ends it early.

Protocol on CONTROL_FD (one byte each): "F" = frozen now (start the clock), "T" = thawed by
the daemon (exit). It thaws every descriptor when the clock passes MAX_SECONDS or when
CONTROL_FD hits EOF (the daemon died), and answers on ACK_FD: "R" ready (signals already
ignored), "X" it had to thaw, "E" it had to thaw and a FITHAW failed (other than EINVAL, "not
frozen"), so the daemon never records a failed thaw as a thaw.
Exit status: 0 the daemon thawed, 2 thawed on the clock, 3 thawed after EOF, 4 a thaw failed.
This file must stay free of backupd imports: it runs outside the package, isolated.
"""

import errno
import fcntl
import os
import select
import signal
import sys
import time

FITHAW = 0xC0045878
# Every signal a person or a service manager may send whose default ends or stops a process
# (SIGKILL and SIGSTOP cannot be ignored; a stopped watchdog could not thaw).
IGNORED_SIGNALS = (
    "SIGTERM", "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM",
    "SIGTSTP", "SIGTTIN", "SIGTTOU",
)  # fmt: skip
EXIT_DAEMON_THAWED, EXIT_CLOCK, EXIT_ORPHANED, EXIT_THAW_FAILED = 0, 2, 3, 4


def ignore_stop_signals() -> None:
    for name in IGNORED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def mount_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"


def thaw(fds: list[int]) -> list[str]:
    """Thaw every descriptor; the failures, as 'mount: reason' (EINVAL is not one)."""
    failures = []
    for fd in reversed(fds):
        try:
            fcntl.ioctl(fd, FITHAW, 0)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                failures.append(f"{mount_of(fd)}: {exc.strerror or exc}")
    return failures


def send(fd: int, byte: bytes) -> None:
    try:  # noqa: SIM105 - no contextlib import in here
        os.write(fd, byte)
    except OSError:
        pass


def report(why: str, failures: list[str]) -> None:
    """One logfmt line on stderr (the daemon's log stream), written only after thawing."""
    if failures:
        detail = "; ".join(failures)
        line = f'level=error logger=watchdog msg="thaw failed" why="{why}" failures="{detail}"'
    else:
        line = f'level=warning logger=watchdog msg="thawed by the freeze watchdog" why="{why}"'
    try:  # noqa: SIM105
        os.write(2, line.encode(errors="replace") + b"\n")
    except OSError:
        pass


def rescue(why: str, fds: list[int], ack: int | None) -> int:
    failures = thaw(fds)
    if ack is not None:
        send(ack, b"E" if failures else b"X")
    report(why, failures)
    if failures:
        return EXIT_THAW_FAILED
    return EXIT_CLOCK if ack is not None else EXIT_ORPHANED


def serve(max_seconds: float, control: int, ack: int, fds: list[int]) -> int:
    send(ack, b"R")
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([control], [], [], timeout)
        if not readable:
            return rescue(f"frozen longer than {max_seconds}s", fds, ack)
        data = os.read(control, 64)
        if not data:
            return rescue("the daemon is gone (its pipe closed)", fds, None)
        if b"F" in data and deadline is None:
            deadline = time.monotonic() + max_seconds
        if b"T" in data:
            return EXIT_DAEMON_THAWED


def main(argv: list[str]) -> int:
    ignore_stop_signals()  # before "R": the daemon freezes nothing until then
    try:  # noqa: SIM105 - the daemon normally did this already (start_new_session)
        os.setsid()
    except OSError:
        pass  # already a session (or group) leader
    max_seconds = float(argv[1])
    control, ack = int(argv[2]), int(argv[3])
    fds = [int(fd) for fd in argv[4:]]
    return serve(max_seconds, control, ack, fds)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
