"""Replay a prepared restore into a running server, then prove it reached the end point.

The server must already hold the snapshot's data (volumes restored and started, or a drill's
scratch server). Afterwards its `@@gtid_binlog_pos` must equal the planned GTID state; any
difference fails the restore instead of being reported as success.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backupd.restore.plan import gtid_state
from backupd.restore.prepare import Prepared
from backupd.restore.relay import replay_relay
from backupd.restore.relay_target import Method
from backupd.restore.replay import Progress, ReplayFailed, ReplayServer, replay
from backupd.restore.tools import tools_for


@dataclass(frozen=True)
class Applied:
    events: int
    bytes: int
    seconds: float
    server_gtid: str  # "" when the server keeps no binlog (nothing to compare)
    gtid_checked: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "server_gtid": self.server_gtid,
            "gtid_checked": self.gtid_checked,
        }


def server_query(server: ReplayServer, sql: str, client: str = "mariadb") -> list[str]:
    """One row of tab-separated values, through the same client and options as the replay."""
    rows = server_rows(server, sql, client)
    return rows[0] if rows else [""]


def server_rows(server: ReplayServer, sql: str, client: str = "mariadb") -> list[list[str]]:
    """Every row of the result, each as its tab-separated values."""
    done = subprocess.run(
        [client, *server.client_args(), "--batch", "--skip-column-names", "-e", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ReplayFailed(f"{client}: {done.stderr.strip() or 'failed'}")
    return [line.split("\t") for line in done.stdout.splitlines()]


def apply(
    prepared: Prepared,
    server: ReplayServer,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 1.0,
    method: Method | None = None,  # None: the pipe
) -> Applied:
    end = prepared.end
    seconds = 0.0
    events = done = 0
    tools = tools_for(prepared.snapshot.flavor)
    if end.transactions and method is not None and method.name == "relay":
        progress = replay_relay(
            prepared.replay_ranges(), server, method, on_progress, progress_interval
        )
        events, done = progress.events, progress.done_bytes
        seconds = progress_seconds(progress)
    elif end.transactions:
        tools.require()
        progress = replay(
            prepared.replay_ranges(),
            server,
            binlog_tool=tools.binlog_tool,
            client=tools.client,
            on_progress=on_progress,
            progress_interval=progress_interval,
        )
        events, done = progress.events, progress.done_bytes
        seconds = progress_seconds(progress)
    if prepared.snapshot.flavor == "mysql":
        return Applied(events, done, seconds, "", False)
    log_bin, position = server_query(server, "SELECT @@GLOBAL.log_bin, @@GLOBAL.gtid_binlog_pos")
    if log_bin != "1":
        return Applied(events, done, seconds, "", False)
    if not gtid_reached(position, end.gtid_state, end.gtid_floor):
        raise ReplayFailed(
            f"the server reports GTID position {position or '(empty)'} after the replay; "
            f"the plan's end point is {end.gtid_state}"
        )
    return Applied(events, done, seconds, position, True)


def gtid_reached(server: str, planned: str, floor: str) -> bool:
    """Exactly the planned state, or between the floor and it in every domain: statement-only
    temporary-table transactions after the floor are not binlogged by a ROW-format target."""
    have, want, least = gtid_state(server), gtid_state(planned), gtid_state(floor or planned)
    if have == want:
        return True
    if set(have) != set(want):
        return False
    for domain, gtid in want.items():
        low = least[domain].sequence if domain in least else 0
        if not low <= have[domain].sequence <= gtid.sequence:
            return False
    return True


def progress_seconds(progress: Progress) -> float:
    return time.monotonic() - progress.started
