"""What the daemon's own user can reach: tested by doing, in a child process that dropped to
that user (so ACLs and group membership count), never guessed from mode bits."""

from __future__ import annotations

import grp
import json
import os
import pwd
from dataclasses import dataclass
from pathlib import PurePosixPath

from backupd.check.result import Result, fail, ok, warn
from backupd.config import Config

SERVICE_USER = "backupd"
# The unit's ReadWritePaths=: writes elsewhere need a drop-in (ProtectSystem=strict).
UNIT_WRITABLE = ("/var/lib/backupd", "/var/cache/backupd", "/run/backupd")


@dataclass(frozen=True)
class Need:
    what: str
    path: str
    mode: str  # "read" (a file), "write" (a directory to create files in), "open" (a mount)


def needs(config: Config) -> list[Need]:
    found = [
        Need("daemon.state_dir", config.daemon.state_dir, "write"),
        Need("daemon.socket", os.path.dirname(config.daemon.socket), "write"),
    ]
    if config.mysql.option_file:
        found.append(Need("mysql.option_file", config.mysql.option_file, "read"))
    if config.binlog.enabled:
        found.append(Need("daemon.spool_dir", config.daemon.spool_dir, "write"))
    if config.storage.url.startswith("file://"):
        found.append(Need("storage.url", config.storage.url.removeprefix("file://"), "write"))
    if config.snapshot.enabled:
        if config.snapshot.provider == "local":
            found.append(Need("snapshot.local.directory", config.snapshot.local.directory, "write"))
        found += [Need(f"snapshot.mounts {m}", m, "open") for m in config.snapshot.mounts]
    return found


def probe(need: Need) -> str:
    """Empty when the current process can do what the daemon will; else why not."""
    path = need.path
    if need.mode == "read":
        try:
            with open(path, "rb"):
                return ""
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
    if need.mode == "open":
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
            return ""
        except OSError as exc:
            return f"cannot open {path}: {exc.strerror}"
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write in {existing}" + ("" if existing == path else f" to create {path}")
    return ""


def probe_as(user: pwd.struct_passwd, items: list[Need]) -> list[str]:
    """Run `probe` for each item in a child that became `user` (with its groups)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges for good, answer, exit
        code = 1
        try:
            os.close(read_fd)
            os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.write(write_fd, json.dumps([probe(item) for item in items]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as answer:
        data = answer.read()
    os.waitpid(pid, 0)
    if not data:
        return [f"could not test as {user.pw_name}"] * len(items)
    return list(json.loads(data))


def check(config: Config, user_name: str = SERVICE_USER) -> list[Result]:
    results = [_socket_group(config)]
    items = needs(config)
    try:
        user = pwd.getpwnam(user_name)
    except KeyError:
        user = None
    if user is not None and os.geteuid() == 0:
        who, answers = user_name, probe_as(user, items)
    else:
        who = pwd.getpwuid(os.geteuid()).pw_name
        results.append(
            warn(
                "access.user",
                f"user {user_name} does not exist; tested as {who}"
                if user is None
                else f"not root: tested as {who}, not as {user_name}",
                "install the package (it creates the user), then run check as root",
            )
        )
        answers = [probe(item) for item in items]
    for item, problem in zip(items, answers, strict=True):
        name = f"access.{item.what}"
        if problem:
            results.append(fail(name, f"{who} {problem}", _fix(item, who)))
        elif user_name == SERVICE_USER and item.mode == "write" and not _unit_writable(item.path):
            results.append(
                warn(
                    name,
                    f"{item.path} is outside the unit's ReadWritePaths (read-only for the daemon)",
                    f"systemctl edit backupd: [Service] ReadWritePaths={item.path}",
                )
            )
        else:
            results.append(ok(name, f"{who} can {item.mode} {item.path}"))
    return results


def _fix(item: Need, who: str) -> str:
    if item.mode == "read":
        return f"chown {who} {item.path} && chmod 0600 {item.path}"
    if item.mode == "open":
        return f"setfacl -m u:{who}:rx {item.path} (and search on its parents)"
    return f"mkdir -p {item.path} && chown {who} {item.path}"


def _unit_writable(path: str) -> bool:
    return any(PurePosixPath(path).is_relative_to(base) for base in UNIT_WRITABLE)


def _socket_group(config: Config) -> Result:
    group = config.daemon.socket_group
    try:
        grp.getgrnam(group)
    except KeyError:
        return fail(
            "access.socket_group",
            f"group {group!r} does not exist: the daemon refuses to start",
            f"groupadd --system {group}, or set daemon.socket_group",
        )
    return ok("access.socket_group", f"{group} exists (members may read status)")
