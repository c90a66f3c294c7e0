"""`backupctl drill` through the running daemon: its result then lands in the daemon's metrics.

`POST /v1/drill` with the command's target starts it; `GET /v1/drill` is asked once a second
until the drill with the answered id is the daemon's last. No daemon answering the socket
(absent, refused): None, and the command runs the drill itself.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from backupd.control.client import ControlClient
from backupd.errors import DaemonUnreachable

POLL_SECONDS = 1.0


def needs_local(args: argparse.Namespace) -> bool:
    """Options the daemon's drill does not take (around a transaction, a table dump, a
    replay method): such a drill runs in the command."""
    return bool(
        getattr(args, "method", "auto") != "auto"
        or getattr(args, "apply_workers", 0)
        or getattr(args, "before", None)
        or getattr(args, "skip", None)
        or getattr(args, "tables", None)
        or getattr(args, "dump", None)
    )


def run(args: argparse.Namespace, default_socket: str) -> dict[str, Any] | None:
    client = ControlClient(args.socket or default_socket)
    body = {"target": args.to, "server": args.server, "cluster": args.cluster}
    if args.timeline is not None:
        body["timeline"] = args.timeline
    try:
        answer = client.request("POST", "/v1/drill", {k: v for k, v in body.items() if v})
    except DaemonUnreachable:
        return None
    drill_id = answer.get("drill_id")
    while True:
        status = client.request("GET", "/v1/drill")
        last = status.get("last") or {}
        if last.get("drill_id") == drill_id and not status.get("running"):
            return {"via": "daemon", **last}
        time.sleep(POLL_SECONDS)  # the daemon's drill thread has no event we can wait on


def render(doc: dict[str, Any]) -> str:
    snapshot = doc.get("snapshot") or {}
    lines = [
        f"drill (run by the daemon) to {doc.get('target')}: {doc['result']}"
        + (f" — {doc['error']}" if doc.get("error") else ""),
    ]
    if snapshot:
        lines.append(f"  snapshot set: {snapshot.get('set_id')} ({snapshot.get('provider')})")
    if "seconds" in doc:
        lines.append(
            f"  {doc['seconds']}s (server ready at the target after {doc['ready_seconds']}s)"
        )
    tables = doc.get("tables", [])
    lines += [f"  {t['table']}: {t['check']} checksum {t['checksum']}" for t in tables]
    return "\n".join(lines)
