"""The freeze watchdog: a separate process that thaws the frozen mounts no matter what.

Run as `python -I -S -B watchdog.py MAX_SECONDS CONTROL_FD ACK_FD MOUNT_FD...` with the mount
descriptors already open (pass_fds). It imports only builtin modules, logs nothing and writes
no file, so it can never block on the filesystems it guards. Protocol on CONTROL_FD (one byte
each): "F" = frozen now (start the clock), "T" = thawed by the daemon (exit). It thaws every
descriptor when the clock passes MAX_SECONDS or when CONTROL_FD hits EOF (the daemon died),
and answers on ACK_FD: "R" ready, "X" it had to thaw (so the daemon marks the run failed).
This file must stay free of backupd imports: it runs outside the package, isolated.
"""

import fcntl
import os
import select
import sys
import time

FITHAW = 0xC0045878


def thaw(fds: list[int]) -> None:
    for fd in reversed(fds):
        try:  # noqa: SIM105 - no contextlib import in here
            fcntl.ioctl(fd, FITHAW, 0)
        except OSError:
            pass  # EINVAL: not frozen; anything else: nothing better to do here


def send(fd: int, byte: bytes) -> None:
    try:  # noqa: SIM105
        os.write(fd, byte)
    except OSError:
        pass


def serve(max_seconds: float, control: int, ack: int, fds: list[int]) -> int:
    send(ack, b"R")
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([control], [], [], timeout)
        if not readable:  # the clock ran out while frozen
            thaw(fds)
            send(ack, b"X")
            return 2
        data = os.read(control, 64)
        if not data:  # EOF: the daemon is gone
            thaw(fds)
            return 3
        if b"F" in data and deadline is None:
            deadline = time.monotonic() + max_seconds
        if b"T" in data:
            return 0


def main(argv: list[str]) -> int:
    max_seconds = float(argv[1])
    control, ack = int(argv[2]), int(argv[3])
    fds = [int(fd) for fd in argv[4:]]
    return serve(max_seconds, control, ack, fds)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
