"""backupctl snapshot [--wait], snapshots, prune [--dry-run]."""

from __future__ import annotations

import argparse
import time
from typing import Any

from backupd.control.client import ControlClient
from backupd.errors import EXIT_FAILED, EXIT_OK
from backupd.snapshot.catalog import COMPLETED


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    snap = commands.add_parser(
        "snapshot", parents=parents, help="take a consistent snapshot now (admin)"
    )
    snap.add_argument("--wait", action="store_true", help="return once the set is recorded")
    snap.add_argument(
        "--timeout", type=float, default=3600.0, help="give up waiting after this many seconds"
    )
    snap.set_defaults(func=cmd_snapshot)
    commands.add_parser(
        "snapshots", parents=parents, help="list snapshot sets from the catalog"
    ).set_defaults(func=cmd_snapshots)
    prune = commands.add_parser("prune", parents=parents, help="apply retention now (admin)")
    prune.add_argument("--dry-run", action="store_true", help="only show what would go")
    prune.set_defaults(func=cmd_prune)


def _client(args: argparse.Namespace) -> ControlClient:
    from backupd.ctl import socket_path

    return ControlClient(socket_path(args))


def _emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    from backupd.ctl import emit

    emit(args, document, lambda _doc: text)


def _when(timestamp: Any) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(timestamp)))


def cmd_snapshot(args: argparse.Namespace) -> int:
    body = {"wait": bool(args.wait), "timeout": args.timeout}
    document = _client(args).request(
        "POST", "/v1/snapshots", body, timeout=args.timeout + 30 if args.wait else None
    )
    state = document.get("state")
    if state == "running":
        text = f"snapshot {document['set_id']} started"
    else:
        text = (
            f"snapshot {document['set_id']} {state} ({document.get('consistency')}) at "
            f"{document.get('coordinate') or '-'} gtid {document.get('gtid') or '-'}; "
            f"lock {document.get('lock_seconds', 0):.3f}s, "
            f"freeze {document.get('freeze_seconds', 0):.3f}s"
        )
        if document.get("error"):
            text += f"\nerror: {document['error']}"
    _emit(args, document, text)
    return EXIT_OK if state in ("running", COMPLETED) else EXIT_FAILED


def cmd_snapshots(args: argparse.Namespace) -> int:
    document = _client(args).request("GET", "/v1/snapshots")
    rows = [
        f"{'SET':<24} {'STARTED':<20} {'PROVIDER':<8} {'STATE':<9} {'CONSIST':<11} "
        f"{'COORDINATE':<24} GTID"
    ]
    for s in document.get("snapshots", []):
        rows.append(
            f"{s['set_id']:<24} {_when(s['started_at']):<20} {s['provider']:<8} {s['state']:<9} "
            f"{s['consistency']:<11} {s.get('coordinate') or '-':<24} {s.get('gtid') or '-'}"
        )
    if document.get("running"):
        rows.append(f"running: {document['running']['set_id']} ({document['running']['phase']})")
    rows += [  # a set whose manifest cannot be read still exists: prune refuses to act
        f"{item['set_id']:<24} {'?':<20} {'?':<8} UNREADABLE {item['reason']}"
        for item in document.get("unreadable_sets", [])
    ]
    _emit(args, document, "\n".join(rows))
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    document = _client(args).request("POST", "/v1/prune", {"dry_run": bool(args.dry_run)})
    refused = document.get("refused")
    if refused:  # only a dry run answers with a document; a real run raises prune_refused
        rows = ["would refuse: nothing would be deleted, because"]
        rows += [f"  {reason}" for reason in refused["reasons"]]
        _emit(args, document, "\n".join(rows))
        return EXIT_FAILED
    verb = "would delete" if document["dry_run"] else "deleted"
    gone = document["delete"] if document["dry_run"] else document["deleted"]
    rows = [f"{verb}: {set_id}" for set_id in gone] or [f"{verb}: nothing"]
    rows += [f"{verb} archived binlog: {name}" for name in document.get("binlog_files", [])]
    rows += [f"keep: {k['set_id']} ({', '.join(k['rules'])})" for k in document["keep"]]
    rows += [f"error: {e}" for e in document["errors"]]
    _emit(args, document, "\n".join(rows))
    return EXIT_FAILED if document["errors"] else EXIT_OK
