"""Before a replay: the target must be exactly at the snapshot set's position.

A replay applies the archive from the set's coordinate on. Into a server behind that point
it skips transactions; into one past it (replayed once already, written to, or restored from
another set) it applies them twice. Either way the result is wrong and says nothing, so the
replay is refused unless the target reports the set's position.

What a server restored from the set reports after crash recovery, per flavor:
- MariaDB: `@@gtid_binlog_pos` is rebuilt from its binlog (the restored files, index fixed)
  and equals the set's GTID position. `@@gtid_slave_pos` lives in an InnoDB table, recovered
  with the data: ahead of the set in one of the set's domains means an applier (a relay-log
  replay) has already applied transactions that the binlog position does not show.
- MySQL: `@@gtid_executed` (from mysql.gtid_executed and the binlog) equals the set's.
- Without GTIDs (MySQL gtid_mode=OFF, old manifests): the binlog holds nothing after the set's
  coordinate — only file headers, checkpoints and rotations in that file and any later one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from backupd.errors import TargetPositionMismatch
from backupd.restore.apply import server_query, server_rows
from backupd.restore.plan import gtid_state
from backupd.restore.replay import ReplayServer
from backupd.restore.tools import MYSQL, ReplayTools, normal_gtid_set
from backupd.snapshot.catalog import SnapshotSet

# SHOW BINLOG EVENTS types that are no transaction: what a restart or a rotation writes.
_HOUSEKEEPING = frozenset(
    (
        "Format_desc",
        "Gtid_list",
        "Binlog_checkpoint",
        "Rotate",
        "Stop",
        "Previous_gtids",
        "Start_encryption",
        "Heartbeat",
    )
)
_START_WITH_BINLOG = (
    "start it with --log-bin=<the restored binlog basename> as `restore volumes` printed, "
    "so its position continues from the set's"
)
_PEEK = 16  # events read per file: housekeeping is the first few of a file


@dataclass(frozen=True)
class TargetPosition:
    """What the target reports; `checked` says how equality was established."""

    position: str
    checked: str  # "gtid_binlog_pos" | "gtid_executed" | "binlog coordinate" | "skipped"

    def to_dict(self) -> dict[str, str]:
        return {"position": self.position, "checked": self.checked}


def require_set_position(
    server: ReplayServer, snapshot: SnapshotSet, tools: ReplayTools
) -> TargetPosition:
    """The target's position when it equals the set's; TargetPositionMismatch otherwise."""
    version = server_query(server, "SELECT VERSION()", tools.client)[0]
    flavor = "mariadb" if "mariadb" in version.lower() else MYSQL
    if flavor != tools.flavor:
        _refuse(snapshot, f"a {flavor} server ({version})", f"the set is {tools.flavor}'s")
    if snapshot.gtid and flavor == MYSQL:
        return _mysql_gtid(server, snapshot, tools)
    if snapshot.gtid:
        return _mariadb_gtid(server, snapshot, tools)
    return _coordinate(server, snapshot, tools)


def _mariadb_gtid(
    server: ReplayServer, snapshot: SnapshotSet, tools: ReplayTools
) -> TargetPosition:
    log_bin, binlog_pos, slave_pos = server_query(
        server,
        "SELECT @@GLOBAL.log_bin, @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos",
        tools.client,
    )
    want = gtid_state(snapshot.gtid)
    if log_bin != "1":
        if slave_pos and gtid_state(slave_pos) == want:  # applied by replication, crash-safe
            return TargetPosition(slave_pos, "gtid_slave_pos")
        _refuse(
            snapshot,
            "no readable position: it runs without a binlog",
            _START_WITH_BINLOG,
        )
    if gtid_state(binlog_pos) != want:
        _refuse(snapshot, f"GTID position {binlog_pos or '(empty)'}", _why_gtid(binlog_pos))
    have = gtid_state(slave_pos)
    ahead = [str(g) for d, g in have.items() if d in want and g.sequence > want[d].sequence]
    if ahead:
        _refuse(
            snapshot,
            f"gtid_slave_pos {slave_pos}",
            f"its replication applier already applied {', '.join(ahead)}, past the set",
        )
    return TargetPosition(binlog_pos, "gtid_binlog_pos")


def _why_gtid(have: str) -> str:
    if not gtid_state(have):
        return "the server shows no GTID history: its binlog index may still name the old paths"
    return "it holds other transactions than the set: a replay would skip or repeat some"


def _mysql_gtid(server: ReplayServer, snapshot: SnapshotSet, tools: ReplayTools) -> TargetPosition:
    (executed,) = server_query(server, "SELECT @@GLOBAL.gtid_executed", tools.client)
    if normal_gtid_set(executed) != normal_gtid_set(snapshot.gtid):
        _refuse(
            snapshot,
            f"gtid_executed {normal_gtid_set(executed) or '(empty)'}",
            "it holds other transactions than the set: a replay would skip or repeat some",
        )
    return TargetPosition(normal_gtid_set(executed), "gtid_executed")


def _coordinate(server: ReplayServer, snapshot: SnapshotSet, tools: ReplayTools) -> TargetPosition:
    """No GTIDs: the set's binlog file must be there, with nothing but housekeeping after
    the coordinate in it and in every later file."""
    file, _, pos = snapshot.coordinate.rpartition(":")
    if not file or not pos.isdigit():
        _refuse(snapshot, "unknown", "the set records no coordinate to compare with")
    (log_bin,) = server_query(server, "SELECT @@GLOBAL.log_bin", tools.client)
    if log_bin != "1":
        _refuse(snapshot, "no readable position: it runs without a binlog", _START_WITH_BINLOG)
    files = [row[0] for row in server_rows(server, "SHOW BINARY LOGS", tools.client)]
    if file not in files:
        why = f"{file} is not among them: not the restored server, or its index not fixed"
        _refuse(snapshot, f"binlog files {', '.join(files) or '(none)'}", why)
    later = files[files.index(file) :]
    for name in later:
        start = f" FROM {int(pos)}" if name == file else ""
        rows = server_rows(
            server, f"SHOW BINLOG EVENTS IN '{name}'{start} LIMIT {_PEEK}", tools.client
        )
        written = [row for row in rows if len(row) > 2 and row[2] not in _HOUSEKEEPING]
        if written:
            _refuse(
                snapshot,
                f"{name}:{written[0][1]} ({written[0][2]})",
                "its binlog has transactions after the set's coordinate",
            )
    return TargetPosition(f"{files[-1]} (nothing after {snapshot.coordinate})", "binlog coordinate")


def _refuse(snapshot: SnapshotSet, have: str, why: str) -> NoReturn:
    set_position = snapshot.gtid or snapshot.coordinate or "(none recorded)"
    raise TargetPositionMismatch(have=have, set_id=snapshot.set_id, want=set_position, why=why)
