"""Which replay method a target gets: its own replication applier (relay) or the pipe.

The relay method lays the archived binlogs out as relay logs in the target's data directory
and lets the target's SQL thread apply them with parallel workers. That only works when the
server runs on this host with a data directory we can write, and only replays faithfully
when nothing in the server's replica settings filters, skips or hides what it applies. Each
refusal names the setting, so `--method auto` can say why it chose the pipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from backupd.database import describe
from backupd.errors import RelayUnavailable
from backupd.restore.replay import ReplayFailed, ReplayServer

METHODS = ("auto", "relay", "pipe")
FILTERS = (
    "replicate_do_db",
    "replicate_ignore_db",
    "replicate_do_table",
    "replicate_ignore_table",
    "replicate_wild_do_table",
    "replicate_wild_ignore_table",
)
MYSQL_REASON = (
    "the relay method is implemented for MariaDB only (MySQL's replica_parallel_workers path "
    "is not built yet)"
)
_SYSTEM_SCHEMAS = "'mysql', 'information_schema', 'performance_schema', 'sys'"
_TRANSACTIONAL = "'InnoDB', 'SEQUENCE'"


@dataclass(frozen=True)
class Method:
    """How the replay runs, and why this way (printed with the plan)."""

    name: str  # "relay" or "pipe"
    why: str
    workers: int = 0  # relay: slave_parallel_threads
    mode: str = ""  # relay: slave_parallel_mode (optimistic or conservative)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "why": self.why}
        if self.name == "relay":
            doc.update(workers=self.workers, parallel_mode=self.mode)
        return doc


PIPE_BY_REQUEST = Method("pipe", "asked for (--method pipe)")


@dataclass(frozen=True)
class TargetFacts:
    """What the choice depends on, read from the target server and this host."""

    version: str
    datadir: str
    local: bool  # the server's pid file names a live process on this host
    datadir_writable: bool
    log_bin: bool
    log_slave_updates: bool
    slave_exec_mode: str
    slave_skip_errors: str
    filters: dict[str, str]
    running: list[str]  # replication connections with a running thread
    non_transactional: int  # user tables in engines that cannot roll back
    error: str = ""  # the target refused a replication statement (privileges)


def default_workers() -> int:
    """Enough workers to overlap commits (their fsyncs group) even on a small host."""
    return min(16, max(8, 2 * (os.cpu_count() or 1)))


def connect(server: ReplayServer) -> pymysql.connections.Connection[Any]:
    """A session on the target with the same credentials as the replay client."""
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10, "charset": "utf8mb4"}
    if server.option_file:
        kwargs.update(read_default_file=server.option_file, read_default_group="client")
    if server.socket:
        kwargs["unix_socket"] = server.socket
    else:
        kwargs.update(host=server.host or "127.0.0.1", port=server.port)
    if server.user:
        kwargs["user"] = server.user
    try:
        return pymysql.connect(**kwargs)
    except (pymysql.err.MySQLError, OSError) as exc:
        raise ReplayFailed(f"cannot connect to the target: {describe(exc)}") from exc


def read_facts(conn: pymysql.connections.Connection[Any]) -> TargetFacts:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT @@version, @@datadir, @@pid_file, @@log_bin, @@log_slave_updates, "
            "@@slave_exec_mode, @@slave_skip_errors, " + ", ".join(f"@@{f}" for f in FILTERS)
        )
        row = cur.fetchone()
        assert row is not None
        version, datadir, pid_file, log_bin, log_slave_updates, exec_mode, skip = row[:7]
        filters = {f: str(v or "") for f, v in zip(FILTERS, row[7:], strict=True)}
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            f"AND table_schema NOT IN ({_SYSTEM_SCHEMAS}) AND engine NOT IN ({_TRANSACTIONAL})"
        )
        non_transactional = int((cur.fetchone() or (0,))[0])
        running, error = [], ""
        try:
            cur.execute("SHOW ALL SLAVES STATUS")
            names = [d[0] for d in cur.description or ()]
            for status in cur.fetchall():
                each = dict(zip(names, status, strict=True))
                if "Yes" in (each.get("Slave_IO_Running"), each.get("Slave_SQL_Running")):
                    running.append(str(each.get("Connection_name") or "(default)"))
        except pymysql.err.MySQLError as exc:
            error = describe(exc)
    return TargetFacts(
        version=str(version),
        datadir=str(datadir).rstrip("/") or "/",
        local=_local_process(str(pid_file or "")),
        datadir_writable=os.access(str(datadir), os.W_OK | os.X_OK),
        log_bin=bool(int(log_bin)),
        log_slave_updates=bool(int(log_slave_updates)),
        slave_exec_mode=str(exec_mode),
        slave_skip_errors=str(skip or "OFF"),
        filters=filters,
        running=running,
        non_transactional=non_transactional,
        error=error,
    )


def _local_process(pid_file: str) -> bool:
    """The pid file exists here and names a running mariadbd/mysqld: the server is local."""
    try:
        pid = int(Path(pid_file).read_text().split()[0])
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return False
    return name in ("mariadbd", "mysqld")


def unfit(facts: TargetFacts, flavor: str) -> str:
    """Why the relay method cannot replay into this target faithfully ("" when it can)."""
    filters = [f"{k}={v}" for k, v in facts.filters.items() if v]
    checks = (
        (
            flavor == "mysql" or "mariadb" not in facts.version.lower(),
            MYSQL_REASON,
        ),
        (bool(facts.error), f"the target refuses replication statements ({facts.error})"),
        (
            not facts.local,
            "the target server does not run on this host (its pid file is not here)",
        ),
        (
            not facts.datadir_writable,
            f"its data directory {facts.datadir} is not writable here",
        ),
        (
            facts.log_bin and not facts.log_slave_updates,
            "the target keeps a binlog but log_slave_updates is OFF: its binlog would miss "
            "every replayed transaction",
        ),
        (
            facts.slave_exec_mode.upper() != "STRICT",
            f"slave_exec_mode is {facts.slave_exec_mode}: conflicts would be skipped silently",
        ),
        (
            facts.slave_skip_errors.upper() != "OFF",
            f"slave_skip_errors is {facts.slave_skip_errors}: errors would be skipped silently",
        ),
        (bool(filters), f"replication filters would drop events ({', '.join(filters)})"),
        (
            bool(facts.running),
            f"replication is running on the target ({', '.join(facts.running)})",
        ),
    )
    return next((why for failed, why in checks if failed), "")


def decide(requested: str, facts: TargetFacts, flavor: str, workers: int) -> Method:
    """Pure: the method for `requested` (auto|relay|pipe); RelayUnavailable for an impossible
    explicit `relay`."""
    if requested == "pipe":
        return PIPE_BY_REQUEST
    why_not = unfit(facts, flavor)
    if why_not:
        return pipe_because(requested, why_not)
    mode = "conservative" if facts.non_transactional else "optimistic"
    why = (
        f"the target's data directory {facts.datadir} is on this host: its SQL thread applies "
        f"the binlogs as relay logs with {workers} parallel workers ({mode}"
        + (f": {facts.non_transactional} non-transactional table(s))" if facts.non_transactional
           else ")")
    )  # fmt: skip
    return Method("relay", why, workers, mode)


def pipe_because(requested: str, why_not: str) -> Method:
    """The pipe under `auto`; RelayUnavailable when relay was asked for by name."""
    if requested == "relay":
        raise RelayUnavailable(why=why_not)
    return Method("pipe", f"relay not possible: {why_not}")


def choose(requested: str, server: ReplayServer, flavor: str, workers: int = 0) -> Method:
    """Connect to the target and decide; `pipe`, or a MySQL archive, needs no connection."""
    if requested == "pipe":
        return PIPE_BY_REQUEST
    if flavor == "mysql":
        return pipe_because(requested, MYSQL_REASON)
    with connect(server) as conn:
        try:
            facts = read_facts(conn)
        except pymysql.err.MySQLError as exc:
            return pipe_because(requested, f"cannot read the target's settings ({describe(exc)})")
    return decide(requested, facts, flavor, workers or default_workers())
