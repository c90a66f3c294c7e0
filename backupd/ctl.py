"""`backupctl`: the operator's command line, talking to the daemon over the control socket.

Exit codes (INTERFACE.md): 0 ok, 1 failed, 2 usage, 3 daemon unreachable, 4 unhealthy,
5 permission denied. `--json` prints the API's document unchanged (the stable contract).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from backupd import __version__
from backupd.binlog import ctl as binlog_ctl
from backupd.check import ctl as check_ctl
from backupd.cli_help import document
from backupd.config import DEFAULT_CONFIG_PATH
from backupd.control.client import ControlClient
from backupd.ctl_support import DEFAULT_SOCKET, Registrar, Subparsers, emit, socket_path
from backupd.errors import EXIT_OK, EXIT_UNHEALTHY, BackupdError
from backupd.render import render_status
from backupd.restore import ctl as restore_ctl
from backupd.restore import undo_ctl
from backupd.snapshot import ctl as snapshot_ctl


def common_options(top_level: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (`backupctl --json status` or the reverse).

    Subcommand copies default to SUPPRESS so they do not overwrite what the top level parsed.
    """
    options = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    options.add_argument(
        "--socket",
        default=default(None),
        help=f"control socket (default: from config, or {DEFAULT_SOCKET})",
    )
    options.add_argument(
        "--config",
        default=default(None),
        help=f"config file (default {DEFAULT_CONFIG_PATH} if present)",
    )
    options.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output"
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backupctl", description=__doc__, parents=[common_options(top_level=True)]
    )
    parser.add_argument("--version", action="version", version=f"backupctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = [common_options(top_level=False)]
    for register in REGISTRARS:
        register(commands, sub)
    return document(parser)


def register_core(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "status", parents=parents, help="daemon, database and storage health"
    ).set_defaults(func=cmd_status)
    commands.add_parser(
        "probe", parents=parents, help="re-probe database and storage now (admin)"
    ).set_defaults(func=cmd_probe)


def cmd_status(args: argparse.Namespace) -> int:
    document = ControlClient(socket_path(args)).request("GET", "/v1/status")
    emit(args, document, render_status)
    return EXIT_OK if document.get("healthy") else EXIT_UNHEALTHY


def cmd_probe(args: argparse.Namespace) -> int:
    document = ControlClient(socket_path(args)).request("POST", "/v1/probe")
    emit(args, document, render_status)
    return EXIT_OK if document.get("healthy") else EXIT_UNHEALTHY


# Each feature adds its commands here: register(commands, parents) -> add_parser(...)
# with parents=parents and set_defaults(func=handler), handler(args) -> exit code.
# Feature modules share helpers through backupd.ctl_support, never through this module.
REGISTRARS: list[Registrar] = [
    register_core,
    snapshot_ctl.register,
    binlog_ctl.register,
    restore_ctl.register,
    undo_ctl.register,
    check_ctl.register,
]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.func
        return handler(args)
    except BackupdError as exc:
        if args.json:
            print(json.dumps({"error": exc.to_dict()}, indent=2))
        print(f"backupctl: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
