"""A real systemd as PID 1: `systemd-nspawn -b` on the cached rootfs, driven from outside.

There is no host systemd or system bus here, so nspawn runs with `--register=no --keep-unit`
and commands reach the container by entering its namespaces (`nsenter -t <leader> -a`): the
container's own `systemctl` then talks to its PID 1. Boot is awaited, not polled: nspawn's
`--notify-ready=yes` passes the container's READY=1 on to our NOTIFY_SOCKET, together with
the leader's PID. The root is `--volatile=overlay` (writes go to a tmpfs; the cache stays
pristine); the network namespace is the host's, so loopback services (moto) are reachable.

Loop devices: a container's /dev has no udev, so `loop-control` and `loop0..N` are created
the way udev would (root:disk 0660) to let losetup and `mount -o loop` work inside.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from pathlib import Path

from tests.testbed.daemon import NotifyListener

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOOP_NODES = 128
LOOP_MAJOR, LOOP_CONTROL = 7, (10, 237)


class Container:
    def __init__(self, rootfs: Path, workdir: Path, binds: dict[Path, str]) -> None:
        self.rootfs = rootfs
        self.workdir = workdir
        self.binds = binds
        self.log = workdir / "container.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = 120) -> Container:
        notify = NotifyListener(self.workdir / "nspawn-notify.sock")
        argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(self.rootfs)]
        argv += ["--volatile=overlay", "--notify-ready=yes", f"--machine=backupd-{os.getpid()}"]
        argv += [f"--bind={host}:{inside}" for host, inside in self.binds.items()]
        argv += ["--boot"]
        env = {"PATH": PATH, "NOTIFY_SOCKET": str(notify.path)}
        try:
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True,
                )  # fmt: skip
            self.leader = int(notify.wait_for("X_NSPAWN_LEADER_PID", timeout=timeout)[
                "X_NSPAWN_LEADER_PID"])  # fmt: skip
            notify.wait_for("READY", "1", timeout=timeout)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-3000:]}") from exc
        finally:
            notify.close()
        self.make_loop_nodes()
        return self

    def path(self, inside: str) -> Path:
        """A path inside the container, reached from the host through the leader's root."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def make_loop_nodes(self) -> None:
        disk = int(self.run("getent", "group", "disk").stdout.split(":")[2])
        nodes = {"loop-control": (stat.S_IFCHR, os.makedev(*LOOP_CONTROL))}
        for number in range(LOOP_NODES):
            nodes[f"loop{number}"] = (stat.S_IFBLK, os.makedev(LOOP_MAJOR, number))
        for name, (kind, device) in nodes.items():
            node = self.path(f"/dev/{name}")
            if not node.exists():
                os.mknod(node, kind | 0o660, device)
                os.chown(node, 0, disk)
                os.chmod(node, 0o660)  # mknod's mode goes through our umask (0640 with 022)

    def command(self, *argv: str) -> list[str]:
        """The host command line that runs `argv` inside (all namespaces, a clean env), as root."""
        return ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={PATH}", *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces), as root."""
        command = self.command(*argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"in container: {' '.join(argv)} exited {done.returncode}\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return done

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def poweroff(self, timeout: float = 60) -> None:
        """SIGTERM to nspawn halts the container cleanly; SIGKILL the leader if it hangs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            # The leader takes its whole PID namespace with it; before boot there is none.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader or process.pid, signal.SIGKILL)
            process.wait(30)
