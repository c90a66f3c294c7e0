"""`backupctl restore plan|replay` and `backupctl drill`: no daemon, the repository alone.

Plan and replay read only the config's `[storage]` section, so they run on a fresh host;
drill also reads `[snapshot.local].directory` (it runs where the local images are).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backupd.config import DEFAULT_CONFIG_PATH, Config
from backupd.config_loader import load_config
from backupd.ctl_support import Subparsers, emit
from backupd.errors import EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY, PermissionDenied, UsageError
from backupd.private import private_dir
from backupd.restore import apply as applying
from backupd.restore import daemon_drill, pinning, repository, table_dump, volumes
from backupd.restore import verify as verifying
from backupd.restore.around import Around, parse_ref
from backupd.restore.drill import DrillOptions
from backupd.restore.drill_run import clean_leftovers, run_drill
from backupd.restore.fetcher import Fetcher, fetcher_for
from backupd.restore.guard import refuse_protected
from backupd.restore.prepare import Prepared, prepare
from backupd.restore.progress import Terminal, progress_line, wanted
from backupd.restore.relay_target import METHODS, choose
from backupd.restore.replay import Progress, ReplayServer
from backupd.restore.tools import tools_for
from backupd.restore.volume_options import overrides_of, volume_options, warming_of
from backupd.restore_target import Target, parse_target
from backupd.storage import open_store


def register(commands: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    restore = commands.add_parser(
        "restore", parents=parents, help="point-in-time restore (no daemon needed)"
    )
    sub = restore.add_subparsers(dest="restore_command", required=True)
    plan = sub.add_parser("plan", parents=parents, help="what a restore to TARGET would do")
    _target_options(plan, around=True)
    plan.set_defaults(func=cmd_plan)
    replay = sub.add_parser(
        "replay", parents=parents, help="replay archived binlogs into a server up to TARGET"
    )
    _target_options(replay, around=True)
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--target-socket", help="the restored server's socket")
    where.add_argument("--target-host", help="the restored server's host (TCP)")
    replay.add_argument(
        "--target-port", type=int, help="with --target-host (no default: 3306 is production's)"
    )
    replay.add_argument("--target-user", default="", help="user (default: the client's)")
    replay.add_argument("--target-option-file", default="", help="client option file")
    _method_options(replay)
    pinning.add_replay_options(replay)
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
    pinning.add_volumes_options(volumes)
    volume_options(volumes)
    volumes.set_defaults(func=cmd_volumes)
    drill = commands.add_parser(
        "drill", parents=parents, help="restore to TARGET in a scratch server and prove it"
    )
    _target_options(drill, around=True)
    table_dump.add_options(drill)
    drill.add_argument(
        "--local", action="store_true", help="run here even when a daemon is running"
    )
    drill.add_argument(
        "--clean-up",
        action="store_true",
        help="only remove what a killed drill left (volumes, mounts, loop devices, server)",
    )
    _method_options(drill)
    drill.set_defaults(func=cmd_drill)
    verify = commands.add_parser(
        "verify", parents=parents, help="check sets, binlog chain and checksums (no daemon)"
    )
    verify.add_argument("--sample", type=int, help="check N random objects instead of all")
    verify.set_defaults(func=cmd_verify)
    cache = sub.add_parser(
        "cache", parents=parents, help="the object cache plan, replay and drill share"
    )
    cache.add_argument("--work-dir", help="the work directory (default: [restore] work_dir)")
    cache.add_argument("--clear", action="store_true", help="remove every cached object")
    cache.set_defaults(func=cmd_cache)


def _target_options(parser: argparse.ArgumentParser, around: bool = False) -> None:
    parser.add_argument(
        "--to", required=not around, help="time (ISO, with zone), GTID, file:pos, latest"
    )
    if around:
        parser.add_argument(
            "--before",
            metavar="GTID|COORD",
            help="stop right before this transaction (instead of --to)",
        )
        parser.add_argument(
            "--skip",
            metavar="GTID|COORD",
            action="append",
            default=[],
            help="replay everything except this transaction (repeat for several)",
        )
    parser.add_argument("--server", help="server identity (archives written before timelines)")
    parser.add_argument(
        "--cluster", help="the archive's cluster (default: [storage] cluster, or the only one)"
    )
    parser.add_argument(
        "--timeline", type=int, help="the timeline TARGET is on (default: the latest)"
    )
    parser.add_argument(
        "--work-dir",
        help="object cache and run directories (default: [restore] work_dir)",
    )
    parser.add_argument(
        "--fetch-workers", type=int, help="objects downloaded at once ([restore] fetch_workers)"
    )
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
    """The command's config, read once: the command, its work dir and its plan all ask."""
    config: Config | None = getattr(args, "loaded_config", None)
    if config is None:
        config = load_config(args.config or DEFAULT_CONFIG_PATH)
        args.loaded_config = config
    return config


@contextlib.contextmanager
def work_dir(args: argparse.Namespace) -> Iterator[Path]:
    """This command's run directory under the work dir, removed afterwards (the cache stays)."""
    root = Path(args.work_dir or storage_config(args).restore.work_dir)
    try:
        if not os.access(private_dir(root / "objects"), os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
        run = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    except PermissionError as exc:  # e.g. made by root, now run as the service user
        raise PermissionDenied(
            f"cannot use the restore work dir {root} ({exc.strerror}): run as its owner "
            "or pass --work-dir"
        ) from exc
    try:
        yield run
    finally:
        shutil.rmtree(run, ignore_errors=True)


def target_around(args: argparse.Namespace) -> tuple[Target, Around]:
    """--to, or --before (exactly one), and the --skip list; the skip warning on stderr."""
    if (args.to is None) == (args.before is None):
        raise UsageError("give --to TARGET or --before GTID|COORD (exactly one of them)")
    before = parse_ref(args.before, "--before") if args.before is not None else None
    skips = tuple(parse_ref(text, "--skip") for text in args.skip)
    around = Around(before, skips)
    if around.warning:
        print(f"warning: {around.warning}", file=sys.stderr, flush=True)
    return before or parse_target(args.to), around


def fetcher(args: argparse.Namespace, config: Config, terminal: Terminal) -> Fetcher:
    if args.fetch_workers is not None and not 1 <= args.fetch_workers <= 64:
        raise UsageError("--fetch-workers must be between 1 and 64")
    return fetcher_for(config.restore, args.work_dir, args.fetch_workers, terminal.follow("fetch"))


def _prepare(
    args: argparse.Namespace, workdir: Path, terminal: Terminal, pinned_set: str = ""
) -> Prepared:
    config = storage_config(args)
    store = open_store(config.storage)
    target, around = target_around(args)
    return prepare(
        store,
        target,
        workdir / "binlogs",
        args.server,
        args.allow_crash_consistent,
        cluster=args.cluster or config.storage.cluster,
        timeline=args.timeline,
        around=around,
        pinned_set=pinned_set,
        fetcher=fetcher(args, config, terminal),
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
    lines += [
        f"  skipped: {s['named']} ({s['from']} .. {s['to']}, GTID {s['gtid'] or '-'})"
        for s in doc.get("skipped") or []
    ]
    lines += [f"  warning: {w}" for w in doc.get("warnings") or []]
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
    with Terminal(wanted(args.json)) as terminal, work_dir(args) as workdir:
        prepared = _prepare(args, workdir, terminal)
    emit(args, prepared.to_dict(), render_plan)
    return EXIT_OK


def progress_printer(args: argparse.Namespace, terminal: Terminal) -> Any:
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
        else:
            line = progress_line("replay", progress, f"{progress.events} events, ")
            terminal.show(line, force=progress.done_bytes >= progress.total_bytes)

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
    config = storage_config(args)
    pin = pinning.load_pin(args, config)
    refuse_protected(server, config.mysql, tools_for(pin.flavor).client if pin else "mariadb")
    with Terminal(wanted(args.json)) as terminal, work_dir(args) as workdir:
        prepared = _prepare(args, workdir, terminal, pin.set_id if pin else "")
        tools = tools_for(prepared.snapshot.flavor)
        start = pinning.check_start(args, server, prepared.snapshot, tools)
        method = choose(args.method, server, prepared.snapshot.flavor, args.apply_workers)
        applied = applying.apply(prepared, server, progress_printer(args, terminal), method=method)
    document = {
        **prepared.to_dict(),
        "method": method.to_dict(),
        "replay": applied.to_dict(),
        "start_position": start.to_dict(),
        "record": args.record or None,
    }
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
    if doc.get("dump"):
        dumped = doc["dump"]
        lines.append(f"  dump of {', '.join(dumped['tables'])} written to {dumped['file']}")
    return "\n".join(lines)


def cmd_drill(args: argparse.Namespace) -> int:
    config = storage_config(args)
    records = Path(args.work_dir) if args.work_dir else Path(config.daemon.state_dir) / "drill"
    if args.clean_up:
        removed = clean_leftovers(config, records)
        emit(args, {"removed": removed}, lambda d: "\n".join(d["removed"]) or "nothing to clean")
        return EXIT_OK
    if not (args.to or args.before):
        raise UsageError("drill needs --to TARGET or --before GTID|COORD (or --clean-up)")
    if not (args.local or args.work_dir or daemon_drill.needs_local(args)):
        asked = daemon_drill.run(args, config.daemon.socket)
        if asked is not None:
            emit(args, asked, daemon_drill.render)
            return EXIT_OK if asked["result"] == "success" else EXIT_FAILED
    store = open_store(config.storage)
    target, around = target_around(args)
    dump = table_dump.request(args)
    with Terminal(wanted(args.json)) as terminal, work_dir(args) as workdir:
        options = DrillOptions(
            server=args.server,
            cluster=args.cluster or config.storage.cluster,
            timeline=args.timeline,
            around=around,
            dump=dump,
            fetcher=fetcher(args, config, terminal),
            method=args.method,
            workers=args.apply_workers,
        )
        on_progress = None if args.json else progress_printer(args, terminal)
        result = run_drill(config, store, target, workdir, records, options, on_progress)
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
    with Terminal(wanted(args.json)) as terminal:
        report = verifying.verify(
            config, open_store(config.storage), args.sample, terminal.follow("verify")
        )
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
    if record.provider == "local" and not args.dest:
        raise UsageError("--dest is required for a local-provider snapshot set")
    if record.provider != "local" and not args.availability_zone:
        raise UsageError("--availability-zone is required for an EBS snapshot set")
    pin, pin_path, command = pinning.volumes_record(args, config, repo, record)
    if record.provider == "local":
        result = volumes.local_volumes(
            record,
            config.snapshot.local.directory,
            Path(args.dest),
            command,
            args.target_socket,
        )
    else:
        result = volumes.ebs_volumes(
            record,
            config.snapshot.ebs,
            args.availability_zone,
            command,
            args.instance_id,
            args.device,
            socket=args.target_socket,
            overrides=overrides_of(args),
            warming=warming_of(args),
        )
    written = pinning.finish_volumes(pin, pin_path, command, result.volumes)
    document = {**result.to_dict(), "record": written}

    def text(doc: dict[str, Any]) -> str:
        lines = [f"snapshot set {doc['set_id']} ({doc['provider']}) restored as:"]
        lines += [f"  {json.dumps(v, sort_keys=True)}" for v in doc["volumes"]]
        lines += [f"note: {note}" for note in doc.get("notes", [])]
        if doc.get("warm"):
            lines.append(f"volumes ready ({doc['warm']}) in {doc['ready_seconds']}s")
        lines.append("then, step by step:")
        lines += [f"  {n}. {step}" for n, step in enumerate(doc["steps"], 1)]
        lines += pinning.render_record(doc["record"])
        return "\n".join(lines)

    emit(args, document, text)
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    cache = fetcher_for(storage_config(args).restore, args.work_dir).cache
    doc: dict[str, Any] = {
        "directory": str(cache.objects),
        "max_bytes": cache.max_bytes,
        "cleared": cache.clear().to_dict() if args.clear else None,
        **cache.usage().to_dict(),
    }

    def text(doc: dict[str, Any]) -> str:
        bound = f"bound {doc['max_bytes'] / 1e6:.1f} MB" if doc["max_bytes"] else "no bound"
        lines = []
        if doc["cleared"] is not None:
            cleared = doc["cleared"]
            lines.append(f"cleared {cleared['entries']} object(s), {cleared['bytes'] / 1e6:.1f} MB")
        lines.append(
            f"object cache {doc['directory']}: {doc['entries']} object(s), "
            f"{doc['bytes'] / 1e6:.1f} MB ({bound})"
        )
        return "\n".join(lines)

    emit(args, doc, text)
    return EXIT_OK
