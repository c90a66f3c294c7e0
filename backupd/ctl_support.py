"""What every `backupctl` command module shares: the socket to talk to and how to print.

A leaf: feature command modules (snapshot, binlog, restore) import this, and `backupd.ctl`
imports them, so nothing here may import `backupd.ctl` or a feature.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TypeAlias

from backupd.config import DEFAULT_CONFIG_PATH, DaemonSection
from backupd.config_loader import load_config
from backupd.errors import ConfigError

DEFAULT_SOCKET = DaemonSection().socket

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Registrar: TypeAlias = Callable[[Subparsers, list[argparse.ArgumentParser]], None]


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        return load_config(args.config).daemon.socket
    try:
        return load_config(DEFAULT_CONFIG_PATH).daemon.socket
    except ConfigError:
        return DEFAULT_SOCKET


def emit(
    args: argparse.Namespace, document: dict[str, Any], text: Callable[[dict[str, Any]], str]
) -> None:
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True, default=str))
    else:
        print(text(document))
