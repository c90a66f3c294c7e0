"""The protected server: the account logs in, holds the privileges each enabled feature
needs, and the server writes a binary log a point-in-time restore can use."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pymysql

from backupd import database
from backupd.binlog.archive import Archive, cluster_name
from backupd.check.result import Result, fail, ok, warn
from backupd.config import Config
from backupd.errors import BackupdError
from backupd.server_settings import SettingRisk, assess_settings, expiry_risk, expiry_seconds
from backupd.storage import ObjectStore

DAY = 86400
# Names a privilege has had across MariaDB and MySQL versions, mapped to one spelling.
_ALIASES = {
    "REPLICATION CLIENT": "BINLOG MONITOR",
    "REPLICATION REPLICA": "REPLICATION SLAVE",
    "CONNECTION_ADMIN": "CONNECTION ADMIN",
    "BACKUP_ADMIN": "BACKUP ADMIN",
}
_GLOBAL_GRANT = re.compile(r"^GRANT (?P<privs>.+?) ON \*\.\* TO ", re.IGNORECASE)


@dataclass(frozen=True)
class Need:
    """A privilege a feature needs: any of `accepted` will do."""

    name: str
    accepted: tuple[str, ...]
    why: str


def global_privileges(grants: Iterable[str]) -> set[str]:
    """The global (`ON *.*`) privileges in SHOW GRANTS lines, alias-normalised."""
    found: set[str] = set()
    for line in grants:
        match = _GLOBAL_GRANT.match(line.strip())
        if not match:
            continue
        for priv in match["privs"].split(","):
            name = " ".join(priv.strip().upper().split())
            found.add(_ALIASES.get(name, name))
    return found


def needed_privileges(config: Config) -> list[Need]:
    needs = [
        Need("binlog_monitor", ("BINLOG MONITOR", "SUPER"), "reading the binlog position"),
    ]
    if config.binlog.enabled:
        needs.append(
            Need("replication", ("REPLICATION SLAVE",), "streaming the binlog (binlog.enabled)")
        )
    if config.snapshot.enabled:
        needs.append(Need("reload", ("RELOAD",), "FLUSH TABLES and the backup lock (snapshots)"))
        needs.append(Need("process", ("PROCESS",), "finding long statements before the lock"))
        if config.snapshot.on_long_query == "kill-selects":
            needs.append(
                Need(
                    "kill",
                    ("CONNECTION ADMIN", "SUPER"),
                    "killing long SELECTs (on_long_query = kill-selects)",
                )
            )
    return needs


def check_privileges(config: Config, grants: list[str], account: str) -> list[Result]:
    held = global_privileges(grants)
    results = []
    for need in needed_privileges(config):
        name = f"mysql.privilege.{need.name}"
        if "ALL PRIVILEGES" in held or held.intersection(need.accepted):
            granted = sorted(held.intersection(need.accepted)) or ["ALL PRIVILEGES"]
            results.append(ok(name, f"{account} has {granted[0]} for {need.why}"))
        else:
            results.append(
                fail(
                    name,
                    f"{account} lacks {' or '.join(need.accepted)}, needed for {need.why}",
                    f"GRANT {need.accepted[0]} ON *.* TO {account};",
                )
            )
    return results


def check_option_file(config: Config) -> Result | None:
    path = config.mysql.option_file
    if not path:
        return None
    if not os.path.exists(path):
        return fail(
            "mysql.option_file",
            f"{path} does not exist: the daemon would log in without user and password",
            f"create {path} with a [client] section (user, password), owner backupd, mode 0600",
        )
    return ok("mysql.option_file", f"{path} present")


# The settings backupd/server_settings.py judges (the daemon's status warns on the same
# rules): the check's name, its level when the setting is at risk, and the fix.
_JUDGED: dict[str, tuple[str, Callable[[str, str, str], Result], str]] = {
    "binlog_format": ("mysql.binlog_format", fail,
                      "SET GLOBAL binlog_format = 'ROW' and binlog_format = ROW in [mysqld]"),
    "binlog_row_image": ("mysql.binlog_row_image", warn, "binlog_row_image = FULL in [mysqld]"),
    "sync_binlog": ("mysql.sync_binlog", warn, "sync_binlog = 1 in [mysqld]"),
    "gtid_mode": ("mysql.gtid", warn,
                  "gtid_mode = ON and enforce_gtid_consistency = ON in [mysqld]"),
    "binlog_checksum": ("mysql.binlog_checksum", warn, "binlog_checksum = CRC32 in [mysqld]"),
}  # fmt: skip


def _expect(
    name: str, actual: Any, wanted: str, level: Callable[[str, str, str], Result], risk: str,
    fix: str,
) -> Result:  # fmt: skip
    value = str(actual).upper()
    return ok(name, value) if value == wanted else level(name, f"{value}: {risk}", fix)


def judged_settings(v: dict[str, Any]) -> dict[str, str]:
    """The variables as server_settings reads them; one an older server lacks counts as its
    default there (binlog_row_image FULL, binlog_checksum NONE, gtid_mode OFF)."""
    return {
        "sync_binlog": str(v["sync_binlog"]),
        "binlog_row_image": str(v.get("binlog_row_image") or "FULL"),
        "binlog_checksum": str(v.get("binlog_checksum") or "NONE"),
        "gtid_mode": str(v.get("gtid_mode") or "OFF"),
    }


def _judged(risk: SettingRisk, ok_detail: str) -> Result:
    name, level, fix = _JUDGED[risk.setting]
    if risk.at_risk:
        return level(name, f"{risk.value.upper()}: {risk.risk}", fix)
    return ok(name, ok_detail)


def check_variables(v: dict[str, Any], flavor: str) -> list[Result]:
    """The server settings a point-in-time restore depends on (pure: table-tested)."""
    log_bin = "ON" if str(v["log_bin"]).upper() in ("1", "ON") else "OFF"
    risks = {
        risk.setting: risk
        for risk in assess_settings(flavor, str(v["binlog_format"]), judged_settings(v), None)
    }
    strict = str(v.get("gtid_strict_mode", "0")) in ("1", "ON")
    gtid = f"MariaDB GTID (gtid_strict_mode {'on' if strict else 'off'})"
    return [
        _expect("mysql.log_bin", log_bin, "ON", fail, "no archive, no point-in-time restore",
                "set log_bin (e.g. log_bin = mysql-bin) in [mysqld] and restart the server"),
        *(_judged(risks[s], risks[s].value.upper())
          for s in ("binlog_format", "binlog_row_image", "sync_binlog")),
        _expect("mysql.innodb_flush_log_at_trx_commit", v["innodb_flush_log_at_trx_commit"],
                "1", warn, "a crash can lose commits the binlog already holds",
                "innodb_flush_log_at_trx_commit = 1 in [mysqld]"),
        _judged(risks["gtid_mode"], gtid if flavor == "mariadb" else "gtid_mode ON"),
        _judged(risks["binlog_checksum"], risks["binlog_checksum"].value.upper()),
    ]  # fmt: skip


def check_client_id(client_id: int, server_id: Any) -> Result:
    """The binlog client registers as a replica with `mysql.server_id`: never the server's own."""
    name = "mysql.server_id"
    if str(client_id) == str(server_id):
        return fail(
            name,
            f"mysql.server_id {client_id} is the server's own server_id: it refuses the stream",
            "set mysql.server_id to an id no server or replica in the topology uses",
        )
    return ok(name, f"binlog client id {client_id} (server {server_id})")


def check_expiry(expiry_seconds: float, lag_seconds: float | None) -> Result:
    """Binlog expiry against how far the archive trails: the server must keep a binlog until
    it is archived, with room for an outage of backupd. The risk is server_settings'; the
    check fails outright once the lag reaches the expiry (the purge has begun)."""
    name = "mysql.binlog_expiry"
    if expiry_seconds <= 0:
        return ok(name, "binlogs never expire (watch the server's disk)")
    days = f"{expiry_seconds / DAY:g} day(s)"
    fix = "binlog_expire_logs_seconds = 604800 (7 days) in [mysqld], or more"
    if lag_seconds is not None and lag_seconds >= expiry_seconds:
        return fail(
            name,
            f"binlogs expire after {days} but the archive trails by {lag_seconds / 3600:.1f} h: "
            "the server purges what was never archived",
            fix,
        )
    if risk := expiry_risk(expiry_seconds, lag_seconds):
        return warn(name, risk, fix)
    lag = "no archive yet" if lag_seconds is None else f"archive lag {lag_seconds:.0f} s"
    return ok(name, f"binlogs kept {days}; {lag}")


def archive_lag(store: ObjectStore, cluster: str, now: float) -> float | None:
    """Seconds since the newest event archived on the cluster's latest timeline; None when
    nothing is archived."""
    latest = Archive(store, cluster).read().latest()
    newest = latest.last_time() if latest is not None else 0
    return max(0.0, now - newest) if newest else None


_VARIABLES = (
    "log_bin", "binlog_format", "binlog_row_image", "sync_binlog",
    "innodb_flush_log_at_trx_commit", "binlog_checksum", "gtid_mode", "gtid_strict_mode",
    "binlog_expire_logs_seconds", "expire_logs_days", "server_id", "server_uuid",
)  # fmt: skip


def read_variables(conn: Any) -> dict[str, Any]:
    names = ", ".join(f"'{name}'" for name in _VARIABLES)
    with conn.cursor() as cursor:
        cursor.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
        return {str(name).lower(): value for name, value in cursor.fetchall()}


def check(config: Config, store: ObjectStore | None) -> list[Result]:
    results = [r for r in (check_option_file(config),) if r is not None]
    try:
        conn = database.connect(config.mysql)
    except BackupdError as exc:
        where = config.mysql.socket or f"{config.mysql.host or 'localhost'}:{config.mysql.port}"
        return [
            *results,
            fail(
                "mysql.connect",
                f"cannot log in at {where}: {exc.message}",
                "check [mysql] socket/host and the user/password in mysql.option_file",
            ),
        ]
    try:
        return results + _checks_on(conn, config, store)
    except pymysql.err.MySQLError as exc:
        return [
            *results,
            fail("mysql.query", database.describe(exc), "see the server's error log"),
        ]
    finally:
        conn.close()


def _checks_on(conn: Any, config: Config, store: ObjectStore | None) -> list[Result]:
    version = database.server_version(conn)
    row = database.query_one(conn, "SELECT CURRENT_USER() AS account")
    user, _, host = str(row["account"] if row else "?@?").partition("@")
    account = f"'{user}'@'{host}'"
    results = [ok("mysql.connect", f"{version.flavor} {version.version} as {account}")]
    with conn.cursor() as cursor:
        cursor.execute("SHOW GRANTS FOR CURRENT_USER()")
        grants = [str(line[0]) for line in cursor.fetchall()]
    results += check_privileges(config, grants, account)
    variables = read_variables(conn)
    results += check_variables(variables, version.flavor)
    results.append(check_client_id(config.mysql.server_id, variables.get("server_id")))
    lag = None
    if store is not None and config.binlog.enabled:
        try:
            lag = archive_lag(store, cluster_name(config.storage), time.time())
        except BackupdError:
            lag = None  # the storage check reports an unreachable repository
    settings = {k: str(v) for k, v in variables.items() if v is not None}
    results.append(check_expiry(expiry_seconds(settings), lag))
    return results
