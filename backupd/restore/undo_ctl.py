"""`backupctl undo GTID|COORD --print`: the inverse SQL of one transaction, for review.

No daemon and no database: the repository alone, like `restore plan`.
"""

from __future__ import annotations

import argparse
import json
import sys

from backupd.ctl_support import Subparsers
from backupd.errors import EXIT_OK, UsageError
from backupd.restore import repository
from backupd.restore.around import parse_ref
from backupd.restore.ctl import storage_config, work_dir
from backupd.restore.fetcher import fetcher_for
from backupd.restore.undo import undo_sql
from backupd.storage import open_store


def register(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    undo = commands.add_parser(
        "undo",
        parents=parents,
        help="print the inverse SQL of one DML transaction (MariaDB; never applied)",
    )
    undo.add_argument("transaction", metavar="GTID|COORD", help="as `backupctl find` prints it")
    undo.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the inverse statements (the only mode: backupd never applies them)",
    )
    undo.add_argument("--server", help="server identity (archives written before timelines)")
    undo.add_argument("--cluster", help="the archive's cluster (default: [storage] cluster)")
    undo.add_argument("--timeline", type=int, help="the timeline to search (default: latest)")
    undo.add_argument(
        "--work-dir", help="the work directory (default: [restore] work_dir, with the object cache)"
    )
    undo.set_defaults(func=cmd_undo)


def cmd_undo(args: argparse.Namespace) -> int:
    if not args.print_only:
        raise UsageError(
            "undo only prints the inverse statements for review: add --print "
            "(backupd never applies them)"
        )
    ref = parse_ref(args.transaction, "undo")
    config = storage_config(args)
    store = open_store(config.storage)
    repo = repository.load(
        store, args.server, cluster=args.cluster or config.storage.cluster, timeline=args.timeline
    )
    with work_dir(args) as workdir:
        fetcher = fetcher_for(config.restore, args.work_dir)
        found, sql = undo_sql(store, repo, ref, workdir / "undo", fetcher)
    if args.json:
        print(json.dumps({**found.to_dict(), "sql": sql}, sort_keys=True))
    else:
        sys.stdout.write(sql)
    return EXIT_OK
