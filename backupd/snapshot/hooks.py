"""pre_freeze / post_thaw hooks: argv strings run without a shell, each with a timeout."""

from __future__ import annotations

import shlex
import subprocess

from backupd.errors import HookFailed


def run_hooks(commands: list[str], timeout: float) -> None:
    """Run each command in order; the first failure raises HookFailed."""
    for command in commands:
        try:
            result = subprocess.run(
                shlex.split(command),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
                cwd="/",
            )
        except subprocess.TimeoutExpired as exc:
            raise HookFailed(hook=command, reason=f"timed out after {timeout}s") from exc
        except OSError as exc:
            raise HookFailed(hook=command, reason=exc.strerror or str(exc)) from exc
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip()[-200:]
            raise HookFailed(hook=command, reason=f"exit {result.returncode}: {tail}")
