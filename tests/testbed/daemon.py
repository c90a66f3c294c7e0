"""Run `backupd run` as a real subprocess under a test NOTIFY_SOCKET, like systemd would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN_DIR = Path(sys.executable).parent


def render_toml(config: dict[str, dict[str, Any]]) -> str:
    """Just enough TOML for test configs: nested tables of scalars, lists and tables."""
    lines: list[str] = []

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return repr(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(v) for v in item) + "]"
        if isinstance(item, dict):
            return "{" + ", ".join(f"{k} = {value(v)}" for k, v in item.items()) + "}"
        return '"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {k: v for k, v in body.items() if isinstance(v, dict) and k not in ("tags",)}
        for key, item in body.items():
            if key not in nested:
                lines.append(f"{key} = {value(item)}")
        lines.append("")
        for key, item in nested.items():
            table(f"{name}.{key}", item)

    for section, body in config.items():
        table(section, body)
    return "\n".join(lines)


class NotifyListener:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30) -> dict[str, str]:
        """Block on the socket until a message carries `key` (=`value`)."""
        for message in self.messages:
            if key in message and (value is None or message[key] == value):
                return message
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {key} notification within {timeout}s: {self.messages}")
            self.sock.settimeout(remaining)
            raw = self.sock.recv(4096).decode()
            message = dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)
            self.messages.append(message)
            if key in message and (value is None or message[key] == value):
                return message

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    def __init__(self, config_path: Path, log_path: Path, notify: NotifyListener) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.notify = notify
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None, wait_ready: bool = True) -> DaemonProcess:
        environ = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN_DIR / "backupd"), "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        if wait_ready:
            try:
                self.notify.wait_for("READY", "1")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n--- daemon log ---\n{self.log()}") from exc
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode
