"""Never replay into the server backupd protects.

`restore replay` writes into whatever server it is pointed at. Pointed at production by
mistake (a default port, a copied command), it would apply old transactions on top of live
data. The target is refused when it is the protected server: the same socket as `[mysql]`,
or the same server identity and data directory as the server `[mysql]` reaches. A host
without that server (a fresh restore host) has nothing to confuse the target with.
"""

from __future__ import annotations

import os

import pymysql

from backupd import database
from backupd.config import MysqlSection
from backupd.errors import BackupdError, ProtectedServer
from backupd.restore.apply import server_query
from backupd.restore.replay import ReplayServer


def refuse_protected(
    target: ReplayServer, protected: MysqlSection, client: str = "mariadb"
) -> None:
    """Raise ProtectedServer when `target` is the server `[mysql]` names."""
    if target.socket and protected.socket and _same_path(target.socket, protected.socket):
        raise ProtectedServer(why=f"its socket {target.socket} is [mysql] socket")
    mine = _identity(protected)
    if mine is None:
        return  # no protected server reachable here: nothing to mistake the target for
    variable, identity, datadir = mine
    theirs = server_query(target, f"SELECT @@GLOBAL.{variable}, @@GLOBAL.datadir", client)
    if len(theirs) == 2 and theirs[0] == identity and _same_path(theirs[1], datadir):
        raise ProtectedServer(
            why=f"it has the same {variable} ({identity}) and datadir ({datadir}) as [mysql]"
        )


def _identity(section: MysqlSection) -> tuple[str, str, str] | None:
    """(identity variable, its value, datadir) of the protected server, None if unreachable."""
    try:
        conn = database.connect(section)
    except BackupdError:
        return None
    try:
        variable = database.identity_variable(database.server_version(conn))
        row = database.query_one(conn, f"SELECT @@GLOBAL.{variable} AS id, @@GLOBAL.datadir AS d")
    except pymysql.err.MySQLError:
        return None
    finally:
        conn.close()
    return (variable, str(row["id"]), str(row["d"])) if row else None


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a.rstrip("/")) == os.path.realpath(b.rstrip("/"))
