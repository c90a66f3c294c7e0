"""backupctl snapshot [--wait], snapshots, prune [--dry-run]."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from backupd.control.client import ControlClient
from backupd.ctl_support import emit, socket_path
from backupd.errors import EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY
from backupd.snapshot.catalog import COMPLETED, PENDING

RUNNING = "running"
POLL_SECONDS = 2.0  # how long each GET waits for the run to finish (server side)
PENDING_POLL_SECONDS = 5.0  # a pending set changes only when the daemon follows it up

MAX_WAIT_SECONDS = 600.0  # one long-poll; the daemon caps a wait at an hour


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
    return ControlClient(socket_path(args))


def _emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    emit(args, document, lambda _doc: text)


def _when(timestamp: Any) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(timestamp)))


def volumes_progress(document: dict[str, Any]) -> str:
    """`vol-1 42%, vol-2 pending` from a running set's `volumes` or a manifest's."""
    return ", ".join(
        f"{v['volume']} {v.get('progress') or v.get('state', '')}".strip()
        for v in document.get("volumes") or []
    )


def wait_showing_progress(client: ControlClient, timeout: float) -> dict[str, Any]:
    """`snapshot --wait` on a terminal: start the run, then show its phase and EC2's progress
    per volume on stderr until it is recorded (or, when it stays pending, until `timeout`)."""
    set_id = client.request("POST", "/v1/snapshots", {"wait": False})["set_id"]
    deadline = time.monotonic() + timeout
    while True:
        document = client.request(
            "GET", f"/v1/snapshot?set_id={set_id}&wait={POLL_SECONDS}", timeout=POLL_SECONDS + 30
        )
        state = document.get("state")
        if state not in (RUNNING, PENDING) or time.monotonic() >= deadline:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            return document
        where = document.get("phase") or state
        progress = volumes_progress(document)
        line = f"snapshot {set_id}: {where}" + (f" — EC2 {progress}" if progress else "")
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        if state == PENDING:
            time.sleep(min(PENDING_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def cmd_snapshot(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.wait and not args.json and sys.stderr.isatty():
        document = wait_showing_progress(client, args.timeout)
    else:
        body = {"wait": bool(args.wait), "timeout": args.timeout}
        give_up = time.monotonic() + args.timeout
        document = client.request(
            "POST", "/v1/snapshots", body, timeout=args.timeout + 30 if args.wait else None
        )
        if args.wait:  # every parked wait was taken: the daemon answered at once
            document = _wait_for(client, document, give_up)
    state = document.get("state")
    if state == RUNNING:
        text = f"snapshot {document['set_id']} started"
    elif state == PENDING:
        text = (
            f"snapshot {document['set_id']} pending at {document.get('coordinate') or '-'}: "
            f"EC2 is still copying ({volumes_progress(document) or 'no progress yet'}); the "
            "daemon follows it up and records it completed (then restorable) or failed — "
            "see backupctl snapshots"
        )
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
    if state == PENDING:
        return EXIT_UNHEALTHY  # not restorable yet, not failed either
    return EXIT_OK if state in (RUNNING, COMPLETED) else EXIT_FAILED


def _wait_for(client: ControlClient, document: dict[str, Any], give_up: float) -> dict[str, Any]:
    """Keep waiting when the daemon answered early (every parked wait was taken)."""
    while document.get("state") == "running" and (left := give_up - time.monotonic()) > 0:
        wait = max(1.0, min(left, MAX_WAIT_SECONDS))
        document = client.request(
            "GET", f"/v1/snapshot?set_id={document['set_id']}&wait={wait:.0f}", timeout=wait + 30
        )
    return document


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
    rows.append(_next_run(document))
    _emit(args, document, "\n".join(rows))
    return EXIT_OK


def _next_run(document: dict[str, Any]) -> str:
    if not document.get("next_run_at"):
        return "next scheduled run: none"
    schedule = f"{document.get('schedule')!r} {document.get('timezone') or 'UTC'}"
    return f"next scheduled run: {_when(document['next_run_at'])} ({schedule})"


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
