"""`backupctl find`: which transactions changed what, from the repository alone."""

from __future__ import annotations

import argparse
import json
import re
import sys

from backupd.config import DEFAULT_CONFIG_PATH
from backupd.config_loader import load_config
from backupd.ctl_support import Subparsers
from backupd.errors import EXIT_OK, UsageError
from backupd.find import OPS, Query, find, summary
from backupd.restore_target import parse_time
from backupd.storage import open_store


def register(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "find",
        parents=parents,
        help="find archived transactions by table, operation, time, rows or statement",
    )
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="DB.TABLE",
        help="a table it changed (repeatable; shell wildcards: 'shop.*')",
    )
    parser.add_argument(
        "--op", action="append", default=[], choices=OPS, help="what it did (repeatable)"
    )
    parser.add_argument("--since", help="committed at or after (ISO-8601 with zone)")
    parser.add_argument("--until", help="committed at or before (ISO-8601 with zone)")
    parser.add_argument(
        "--min-rows",
        type=int,
        default=0,
        metavar="N",
        help="at least N rows of the chosen operations on the chosen tables",
    )
    parser.add_argument(
        "--statement", metavar="REGEX", help="its statement matches (case-insensitive)"
    )
    parser.add_argument("--timeline", type=int, help="only this timeline (default: all)")
    parser.add_argument("--cluster", help="the archive's cluster when the repository holds several")
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    parser.set_defaults(func=cmd_find)


def query_of(args: argparse.Namespace) -> Query:
    if args.limit < 1 or args.min_rows < 0:
        raise UsageError("--limit must be at least 1 and --min-rows at least 0")
    try:
        pattern = re.compile(args.statement, re.IGNORECASE) if args.statement else None
    except re.error as exc:
        raise UsageError(f"--statement is not a regular expression: {exc}") from exc
    return Query(
        tables=tuple(args.table),
        ops=tuple(args.op),
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        min_rows=args.min_rows,
        statement=pattern,
        timeline=args.timeline,
        limit=args.limit,
    )


def cmd_find(args: argparse.Namespace) -> int:
    query = query_of(args)
    config = load_config(args.config or DEFAULT_CONFIG_PATH)
    result = find(open_store(config.storage), args.cluster or config.storage.cluster, query)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps([item.to_json() for item in result.found], indent=2))
    else:
        print(summary(result.found))
    return EXIT_OK
