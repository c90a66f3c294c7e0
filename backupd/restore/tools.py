"""The binlog tool and client a replay runs, chosen by the archive's flavor, not by PATH.

A MySQL archive is decoded by `mysqlbinlog` and applied by `mysql`; a MariaDB archive by
`mariadb-binlog` and `mariadb`. The two families read each other's binlogs only partly
(MySQL 8's TRANSACTION_PAYLOAD, MariaDB's GTID events), so whichever happens to be first
on PATH is not good enough: the snapshot set's manifest says which server wrote the data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from backupd.errors import UsageError
from backupd.restore.replay import ReplayFailed

MARIADB = "mariadb"
MYSQL = "mysql"


@dataclass(frozen=True)
class ReplayTools:
    flavor: str
    binlog_tool: str
    client: str

    def require(self) -> ReplayTools:
        """Refuse before anything runs when a tool of this flavor is not installed."""
        for tool in (self.binlog_tool, self.client):
            if shutil.which(tool) is None:
                raise ReplayFailed(
                    f"{tool} not found on PATH: the archive was written by {self.flavor}, "
                    f"so its replay needs the {self.flavor} client tools"
                )
        return self


def tools_for(flavor: str) -> ReplayTools:
    """The tools of `flavor` as the snapshot manifest records it ("" = before flavors were
    recorded: those archives were all written by MariaDB)."""
    if flavor in ("", MARIADB):
        return ReplayTools(MARIADB, "mariadb-binlog", "mariadb")
    if flavor == MYSQL:
        return ReplayTools(MYSQL, "mysqlbinlog", "mysql")
    raise UsageError(f"unknown server flavor {flavor!r} in the snapshot manifest")


def normal_gtid_set(text: str) -> str:
    """A MySQL GTID set as one comparable string: MySQL prints it with newlines after the
    commas and in its own order; uuids compare case-insensitively."""
    parts = [p.strip().lower() for p in text.replace("\\n", "").replace("\n", "").split(",")]
    return ",".join(sorted(p for p in parts if p))
