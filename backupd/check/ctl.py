"""`backupctl check`: the online pre-flight, straight from the config (no daemon needed)."""

from __future__ import annotations

import argparse
import json
import sys

from prometheus_client import CollectorRegistry

from backupd.check import access
from backupd.check.result import FAIL, NAGIOS_UNKNOWN, Result, nagios, report
from backupd.check.runner import run_checks
from backupd.config import DEFAULT_CONFIG_PATH, Config
from backupd.config_loader import load_config
from backupd.ctl_support import Subparsers
from backupd.errors import EXIT_FAILED, EXIT_OK, ConfigError
from backupd.notifications import Event, Notifications


def register(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        parents=parents,
        help="test every dependency for real: database, repository, EC2, this host (no daemon)",
        description="Each line OK, WARN or FAIL with the fix. Exit 0 when nothing failed "
        "(warnings allowed), 1 when something did. Example: backupctl check --nagios",
    )
    check.add_argument(
        "--nagios", action="store_true", help="one line, Nagios exit codes (0 OK, 1 WARN, 2 CRIT)"
    )
    check.add_argument(
        "--notify",
        action="store_true",
        help="run [notify] on_failure when something failed (for a check run from cron)",
    )
    check.add_argument(
        "--user",
        default=access.SERVICE_USER,
        help=f"the daemon's user, whose access is tested (default {access.SERVICE_USER})",
    )
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    path = args.config or DEFAULT_CONFIG_PATH
    try:
        config = load_config(path)
    except ConfigError as exc:
        if not args.nagios:
            raise
        print(f"BACKUPD CHECK UNKNOWN - {path}: {exc.message}")
        return NAGIOS_UNKNOWN
    results = run_checks(config, args.user)
    if args.notify:
        notify_failures(config, results)
    if args.nagios:
        code, line = nagios(results)
        print(line)
        return code
    document = report(results)
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        for result in results:
            print(result.line())
        counts = document["counts"]
        print(f"{counts['OK']} ok, {counts['WARN']} warnings, {counts['FAIL']} failed")
    sys.stdout.flush()
    return EXIT_FAILED if document["status"] == FAIL else EXIT_OK


def notify_failures(config: Config, results: list[Result]) -> None:
    """`--notify`: a failing check runs `[notify] on_failure` as the daemon's events do
    (BACKUPD_EVENT=check); the notifier's own failure is reported, never fatal."""
    failed = [r for r in results if r.status == FAIL]
    if not failed:
        return
    event = Event(
        "check",
        "failed",
        f"backupctl check: {len(failed)} failed, first {failed[0].name}",
        error=f"{failed[0].name}: {failed[0].detail}",
    )
    outcome = Notifications(config.notify, CollectorRegistry()).deliver(event)
    if outcome is not None and outcome.result != "ok":
        print(f"notify: {outcome.result}: {outcome.output}", file=sys.stderr)
