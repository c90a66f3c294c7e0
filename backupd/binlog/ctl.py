"""`backupctl binlog status` (from the daemon), `backupctl binlog fetch` and `backupctl binlog
index` (no daemon)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backupd.binlog import fetch as fetching
from backupd.binlog.archive import select
from backupd.binlog.index_backfill import backfill
from backupd.config import DEFAULT_CONFIG_PATH
from backupd.config_loader import load_config
from backupd.control.client import ControlClient
from backupd.ctl_support import Subparsers, emit, socket_path
from backupd.errors import EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY
from backupd.render import ago
from backupd.storage import open_store


def register(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    binlog = commands.add_parser("binlog", parents=parents, help="the binlog archive")
    sub = binlog.add_subparsers(dest="binlog_command", required=True)
    sub.add_parser(
        "status", parents=parents, help="archived vs server coordinate, recovery point"
    ).set_defaults(func=cmd_status)
    fetch = sub.add_parser(
        "fetch", parents=parents, help="rebuild binlog files from the repository (no daemon)"
    )
    fetch.add_argument("--dest", required=True, help="directory for the rebuilt files")
    fetch.add_argument("--from", dest="first", help="first binlog file to rebuild")
    fetch.add_argument("--to", dest="last", help="last binlog file to rebuild")
    fetch.add_argument("--server", help="server identity (archives written before timelines)")
    fetch.add_argument("--cluster", help="the archive's cluster when the repository holds several")
    fetch.add_argument("--timeline", type=int, help="timeline to rebuild (default: the latest)")
    fetch.set_defaults(func=cmd_fetch)
    index = sub.add_parser(
        "index",
        parents=parents,
        help="write the change index of archived segments that lack one (no daemon)",
    )
    index.add_argument("--cluster", help="only this cluster (default: every one)")
    index.add_argument("--timeline", type=int, help="only this timeline (default: every one)")
    index.set_defaults(func=cmd_index)


def render(doc: dict[str, Any]) -> str:
    lines = [
        f"binlog archive — {'healthy' if doc.get('healthy') else 'UNHEALTHY'}",
        f"  server:    {doc.get('server_coordinate')}",
        f"  archived:  {doc.get('archived_coordinate')} (lag {doc.get('lag_bytes')} bytes)",
        f"  recovery point: {ago(doc.get('recovery_point'))}",
        f"  spool: {doc.get('spool_bytes')} of {doc.get('spool_max_bytes')} bytes, "
        f"upload backlog {doc.get('upload_backlog')} segments, "
        f"change index {doc.get('index_lag_seconds') or 0:g}s behind",
        f"  gaps: {', '.join(doc.get('gaps') or []) or 'none'}",
    ]
    lines += [f"warning: {w}" for w in doc.get("warnings", [])]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    document = ControlClient(socket_path(args)).request("GET", "/v1/binlog/status")
    emit(args, document, render)
    return EXIT_OK if document.get("healthy") else EXIT_UNHEALTHY


def cmd_fetch(args: argparse.Namespace) -> int:
    config = load_config(args.config or DEFAULT_CONFIG_PATH)
    store = open_store(config.storage)
    chosen = select(store, args.cluster or config.storage.cluster, args.timeline, args.server)
    server = chosen.identity
    files = fetching.fetch(store, Path(args.dest), chosen.stream, args.first, args.last)
    gaps = [g.key for g in fetching.gaps(store, chosen.stream)]
    document = {
        "server": server,
        "cluster": chosen.cluster or None,
        "timeline": chosen.timeline.id if chosen.timeline else None,
        "dest": str(args.dest),
        "files": [
            {
                "file": f.file,
                "size": f.size,
                "closed": f.closed,
                "segments": f.segments,
                "sha256": f.sha256,
            }
            for f in files
        ],
        "gaps": gaps,
    }

    def text(doc: dict[str, Any]) -> str:
        lines = [
            f"{f['file']}: {f['size']} bytes from {f['segments']} segment(s)"
            f"{'' if f['closed'] else ' (still being written)'}"
            for f in doc["files"]
        ]
        lines += [f"gap recorded: {g}" for g in doc["gaps"]]
        return "\n".join(lines) or "no binlog files archived"

    emit(args, document, text)
    return EXIT_OK


def cmd_index(args: argparse.Namespace) -> int:
    """Backfill: idempotent and resumable (run it again after an interruption)."""
    config = load_config(args.config or DEFAULT_CONFIG_PATH)
    store = open_store(config.storage)
    quiet = args.json

    def progress(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr)

    report = backfill(store, args.cluster or "", args.timeline, progress)
    document = {
        "indexed": report.indexed,
        "already_indexed": report.present,
        "failed": report.failed,
        "timelines": report.timelines,
    }

    def text(doc: dict[str, Any]) -> str:
        lines = [
            f"{doc['indexed']} segment(s) indexed, {doc['already_indexed']} had an index "
            f"({', '.join(doc['timelines'])})"
        ]
        return "\n".join(lines + [f"not indexed: {f}" for f in doc["failed"]])

    emit(args, document, text)
    return EXIT_FAILED if report.failed else EXIT_OK
