"""`backupctl restore plan|replay` and `backupctl drill`: no daemon, the repository alone.

Plan and replay read only the config's `[storage]` section, so they run on a fresh host;
drill also reads `[snapshot.local].directory` (it runs where the local images are).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backupd.config import DEFAULT_CONFIG_PATH, Config
from backupd.config_loader import load_config
from backupd.ctl_support import Subparsers, emit
from backupd.errors import EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY, UsageError
from backupd.restore import apply as applying
from backupd.restore import drill as drilling
from backupd.restore import repository, volumes
from backupd.restore import verify as verifying
from backupd.restore.guard import refuse_protected
from backupd.restore.prepare import Prepared, prepare
from backupd.restore.relay_target import METHODS, choose
from backupd.restore.replay import Progress, ReplayServer
from backupd.restore_target import parse_target
from backupd.storage import open_store


def register(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    restore = commands.add_parser(
        "restore", parents=parents, help="point-in-time restore (no daemon needed)"
    )
    sub = restore.add_subparsers(dest="restore_command", required=True)
    plan = sub.add_parser("plan", parents=parents, help="what a restore to TARGET would do")
    _target_options(plan)
    plan.set_defaults(func=cmd_plan)
    replay = sub.add_parser(
        "replay", parents=parents, help="replay archived binlogs into a server up to TARGET"
    )
    _target_options(replay)
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--target-socket", help="the restored server's socket")
    where.add_argument("--target-host", help="the restored server's host (TCP)")
    replay.add_argument(
        "--target-port", type=int, help="with --target-host (no default: 3306 is production's)"
    )
    replay.add_argument("--target-user", default="", help="user (default: the client's)")
    replay.add_argument("--target-option-file", default="", help="client option file")
    _method_options(replay)
    replay.set_defaults(func=cmd_replay)
    volumes = sub.add_parser(
        "volumes", parents=parents, help="the snapshot set for TARGET as new volumes + steps"
    )
    _target_options(volumes)
    volumes.add_argument("--dest", help="local provider: directory for the image copies")
    volumes.add_argument("--availability-zone", help="EBS: zone for the new volumes")
    volumes.add_argument("--instance-id", default="", help="EBS: attach to this instance")
    volumes.add_argument(
        "--device", action="append", default=[], help="EBS: device per volume (repeat)"
    )
    volumes.set_defaults(func=cmd_volumes)
    drill = commands.add_parser(
        "drill", parents=parents, help="restore to TARGET in a scratch server and prove it"
    )
    _target_options(drill)
    _method_options(drill)
    drill.set_defaults(func=cmd_drill)
    verify = commands.add_parser(
        "verify", parents=parents, help="check sets, binlog chain and checksums (no daemon)"
    )
    verify.add_argument("--sample", type=int, help="check N random objects instead of all")
    verify.set_defaults(func=cmd_verify)


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, help="time (ISO, with zone), GTID, file:pos, latest")
    parser.add_argument("--server", help="server identity (archives written before timelines)")
    parser.add_argument(
        "--cluster", help="the archive's cluster (default: [storage] cluster, or the only one)"
    )
    parser.add_argument(
        "--timeline", type=int, help="the timeline TARGET is on (default: the latest)"
    )
    parser.add_argument("--work-dir", help="where binlogs (and drill images) go (default: temp)")
    parser.add_argument(
        "--allow-crash-consistent",
        action="store_true",
        help="also start from crash-consistent snapshot sets",
    )


def _method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="relay: the target's own replication applier, in parallel; pipe: one "
        "mariadb-binlog | mariadb session; auto (default): relay where possible",
    )
    parser.add_argument(
        "--apply-workers",
        type=_workers,
        default=0,
        help="relay: parallel applier threads (default: 2 per CPU, 8 to 16)",
    )


def _workers(text: str) -> int:
    """0 (automatic) to 256 parallel applier threads; anything else is refused (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a worker count from 0 to 256")
    return value


def storage_config(args: argparse.Namespace) -> Config:
    return load_config(args.config or DEFAULT_CONFIG_PATH)


@contextlib.contextmanager
def work_dir(args: argparse.Namespace) -> Iterator[Path]:
    if args.work_dir:
        path = Path(args.work_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="backupd-restore-") as tmp:
        yield Path(tmp)


def _prepare(args: argparse.Namespace, workdir: Path) -> Prepared:
    config = storage_config(args)
    store = open_store(config.storage)
    return prepare(
        store,
        parse_target(args.to),
        workdir / "binlogs",
        args.server,
        args.allow_crash_consistent,
        cluster=args.cluster or config.storage.cluster,
        timeline=args.timeline,
    )


def render_plan(doc: dict[str, Any]) -> str:
    snap, end = doc["snapshot"], doc["end"]
    lines = [
        f"restore to {doc['target']} (server {doc['server']})",
        f"  snapshot set: {snap['set_id']} ({snap['provider']}) at {snap['coordinate']}, "
        f"GTID {snap['gtid'] or '-'}",
        f"  binlog files: {', '.join(doc['files']) or 'none'} "
        f"({len(doc['segments'])} segment(s), all checksums verified)",
        f"  end point: {end['coordinate']} GTID {end['gtid'] or '-'} "
        f"committed {_utc(end['commit_time']) if end['commit_time'] else '-'}; "
        f"{end['transactions']} transaction(s) to replay",
        f"  GTID position afterwards: {end['gtid_state'] or '-'}",
    ]
    if doc.get("method"):
        lines.append(f"  method: {doc['method']['name']} ({doc['method']['why']})")
    path = doc.get("timeline_path") or []
    if doc.get("cluster"):
        lines.insert(1, f"  cluster {doc['cluster']}, timeline {doc.get('timeline')}")
    if len(path) > 1:  # the replay crosses branch points
        lines += [
            f"  timeline {leg['timeline']}: {leg['from']} .. {leg['to']} "
            f"({leg['transactions']} transaction(s))"
            for leg in path
        ]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    with work_dir(args) as workdir:
        prepared = _prepare(args, workdir)
    emit(args, prepared.to_dict(), render_plan)
    return EXIT_OK


def progress_printer(args: argparse.Namespace) -> Any:
    def show(progress: Progress) -> None:
        eta = progress.eta_seconds
        doc: dict[str, Any] = {
            "events": progress.events,
            "bytes_done": progress.done_bytes,
            "bytes_total": progress.total_bytes,
            "bytes_per_second": round(progress.rate),
            "eta_seconds": round(eta, 1) if eta is not None else None,
        }
        if args.json:
            print(json.dumps({"progress": doc}), flush=True)
        elif sys.stderr.isatty():
            print(
                f"\r{doc['events']} events, {doc['bytes_done']}/{doc['bytes_total']} bytes, "
                f"{doc['bytes_per_second'] / 1e6:.1f} MB/s, ETA {doc['eta_seconds']}s   ",
                end="",
                file=sys.stderr,
                flush=True,
            )

    return show


def cmd_replay(args: argparse.Namespace) -> int:
    if args.target_host and args.target_port is None:
        raise UsageError("--target-host needs --target-port (there is no default port)")
    server = ReplayServer(
        socket=args.target_socket or "",
        host=args.target_host or "",
        port=args.target_port or 0,
        user=args.target_user,
        option_file=args.target_option_file,
    )
    refuse_protected(server, storage_config(args).mysql)
    with work_dir(args) as workdir:
        prepared = _prepare(args, workdir)
        method = choose(args.method, server, prepared.snapshot.flavor, args.apply_workers)
        applied = applying.apply(prepared, server, progress_printer(args), method=method)
    document = {**prepared.to_dict(), "method": method.to_dict(), "replay": applied.to_dict()}
    if args.json:
        print(json.dumps(document, sort_keys=True))
    else:
        print(render_plan(document))
        print(
            f"replayed {applied.events} events ({applied.bytes} bytes) in {applied.seconds:.1f}s; "
            f"server GTID position {applied.server_gtid or '(not checked: binlog off)'}"
        )
    return EXIT_OK


def render_drill(doc: dict[str, Any]) -> str:
    lines = [
        render_plan(doc),
        f"drill {doc['result']} in {doc['seconds']}s "
        f"(server ready at the target after {doc['ready_seconds']}s)",
    ]
    lines += [f"  {t['table']}: {t['check']} checksum {t['checksum']}" for t in doc["tables"]]
    return "\n".join(lines)


def cmd_drill(args: argparse.Namespace) -> int:
    config = storage_config(args)
    store = open_store(config.storage)
    with work_dir(args) as workdir:
        result = drilling.drill(
            store,
            parse_target(args.to),
            config.snapshot.local.directory,
            workdir,
            args.server,
            None if args.json else progress_printer(args),
            cluster=args.cluster or config.storage.cluster,
            timeline=args.timeline,
            method=args.method,
            workers=args.apply_workers,
        )
    emit(args, result.to_dict(), render_drill)
    return EXIT_OK if result.ok else EXIT_FAILED


def render_verify(doc: dict[str, Any]) -> str:
    lines = [
        f"verify: {'OK' if doc['ok'] else 'PROBLEMS FOUND'} — {doc['sets_checked']} snapshot "
        f"set(s), {doc['objects_checked']} of {doc['objects_total']} objects checked"
    ]
    for server, win in doc["windows"].items():
        earliest, latest = win.get("earliest"), win.get("latest")
        if earliest and latest:
            lines.append(
                f"  server {server}: recoverable from {_utc(earliest['time'])} "
                f"({earliest['coordinate']}) to {_utc(latest['time'])} ({latest['coordinate']})"
            )
        else:
            lines.append(f"  server {server}: nothing recoverable ({win.get('why')})")
    lines += [f"problem: {p}" for p in doc["problems"]]
    return "\n".join(lines)


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def cmd_verify(args: argparse.Namespace) -> int:
    if args.sample is not None and args.sample < 1:
        raise UsageError("--sample must be at least 1")
    config = storage_config(args)
    report = verifying.verify(config, open_store(config.storage), args.sample)
    emit(args, report.to_dict(), render_verify)
    return EXIT_OK if not report.problems else EXIT_UNHEALTHY


def cmd_volumes(args: argparse.Namespace) -> int:
    config = storage_config(args)
    store = open_store(config.storage)
    repo = repository.load(
        store,
        args.server,
        args.allow_crash_consistent,
        cluster=args.cluster or config.storage.cluster,
        timeline=args.timeline,
    )
    plan = repository.plan(repo, parse_target(args.to))
    record = repository.require_set(repo, plan.snapshot.set_id)
    if record.provider == "local":
        if not args.dest:
            raise UsageError("--dest is required for a local-provider snapshot set")
        result = volumes.local_volumes(
            record, config.snapshot.local.directory, Path(args.dest), args.to
        )
    else:
        if not args.availability_zone:
            raise UsageError("--availability-zone is required for an EBS snapshot set")
        result = volumes.ebs_volumes(
            record,
            config.snapshot.ebs,
            args.availability_zone,
            args.to,
            args.instance_id,
            args.device,
        )

    def text(doc: dict[str, Any]) -> str:
        lines = [f"snapshot set {doc['set_id']} ({doc['provider']}) restored as:"]
        lines += [f"  {json.dumps(v, sort_keys=True)}" for v in doc["volumes"]]
        lines.append("then, step by step:")
        lines += [f"  {n}. {step}" for n, step in enumerate(doc["steps"], 1)]
        return "\n".join(lines)

    emit(args, result.to_dict(), text)
    return EXIT_OK
