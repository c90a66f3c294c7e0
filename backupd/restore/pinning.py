"""The pinned restore as `backupctl` runs it: `restore volumes` writes the restore record
and prints the replay command; `restore replay --record` starts from that set only, into a
server that must still be at the set's position."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from backupd.config import Config
from backupd.restore import record as records
from backupd.restore.position import TargetPosition, require_set_position
from backupd.restore.replay import ReplayServer
from backupd.restore.repository import Repository
from backupd.restore.tools import ReplayTools
from backupd.snapshot.catalog import SnapshotSet


def add_volumes_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record-file",
        help="where the restore record goes (default: DEST/SET.restore.json for a local set, "
        "[daemon] state_dir/restores/SET.json for EBS)",
    )
    parser.add_argument(
        "--target-socket",
        default=records.DEFAULT_SOCKET,
        help="socket the restored server will listen on (in the printed steps and command)",
    )


def add_replay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record",
        help="restore record (file, or set id kept in state_dir/restores) that `restore "
        "volumes` wrote: replay from exactly that set",
    )
    parser.add_argument(
        "--skip-position-check",
        action="store_true",
        help="experts only: do not require the target at the set's position (a wrong "
        "target then gets transactions skipped or applied twice, silently)",
    )


def volumes_record(
    args: argparse.Namespace, config: Config, repo: Repository, snapshot: SnapshotSet
) -> tuple[records.RestoreRecord, Path, str]:
    """The record to write, where (checked writable before any volume is made), and the
    replay command to print."""
    record = records.RestoreRecord.of(snapshot, repo.cluster, repo.timeline, repo.server, args.to)
    if args.record_file:
        path = Path(args.record_file)
    elif snapshot.provider == "local" and args.dest:
        path = records.local_path(Path(args.dest), snapshot.set_id)
    else:
        path = records.state_path(config.daemon.state_dir, snapshot.set_id)
    records.writable(path)
    return record, path, records.replay_command(record, path, args.target_socket, args.config)


def finish_volumes(
    record: records.RestoreRecord, path: Path, command: str, volumes: list[dict[str, str]]
) -> dict[str, Any]:
    """Write the record with the volumes made; its document for the output."""
    done = replace(record, volumes=volumes)
    done.write(path)
    return records.to_dict(done, path, command)


def load_pin(args: argparse.Namespace, config: Config) -> records.RestoreRecord | None:
    """The record `--record` names; its cluster, timeline and server become the defaults."""
    if not args.record:
        return None
    pin = records.load(records.find(args.record, config.daemon.state_dir))
    args.cluster = args.cluster or pin.cluster or None
    if args.timeline is None and pin.timeline:
        args.timeline = pin.timeline
    if not pin.timeline:  # an archive from before timelines is chosen by server identity
        args.server = args.server or pin.server or None
    return pin


def check_start(
    args: argparse.Namespace, server: ReplayServer, snapshot: SnapshotSet, tools: ReplayTools
) -> TargetPosition:
    if args.skip_position_check:
        return TargetPosition("", "skipped")
    return require_set_position(server, snapshot, tools)


def render_record(doc: dict[str, Any]) -> list[str]:
    return [
        f"restore record: {doc['path']} (set {doc['set_id']}, {doc['coordinate']}, "
        f"GTID {doc['gtid'] or '-'})",
        f"replay with: {doc['replay_command']}",
    ]
