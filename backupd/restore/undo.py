"""Undo preview: the inverse statements of one archived DML transaction (MariaDB).

The transaction is found in the archive alone (its GTID, or the coordinate it starts at),
its events are written to a small binlog file of their own (the original format
description, then exactly that transaction) and `mariadb-binlog --flashback` turns its row
events into their inverse. backupd only prints them: an operator reviews and applies.
Refused, with the reason, for DDL, statement-format or non-row work (nothing to invert
exactly) and for MySQL archives (no flashback).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.binlog import compressed, events
from backupd.errors import UndoRefused
from backupd.restore import repository, tx_timelines
from backupd.restore.around import Located, TxRef
from backupd.restore.endpoint import Transaction, file_events
from backupd.restore.fetcher import Fetcher
from backupd.restore.object_cache import ObjectCache
from backupd.restore_target import GtidTarget
from backupd.storage import ObjectStore

TABLE_MAP = 19
_ROWS = {
    23: "insert", 30: "insert", 166: "insert", 169: "insert",
    24: "update", 31: "update", 167: "update", 170: "update",
    25: "delete", 32: "delete", 168: "delete", 171: "delete",
}  # fmt: skip
_FRAMING = frozenset((events.MARIADB_GTID, events.XID, TABLE_MAP, events.MARIADB_ANNOTATE_ROWS))
_ENDS = (b"BEGIN", b"COMMIT", b"ROLLBACK")
_DDL = (b"CREATE", b"ALTER", b"DROP", b"RENAME", b"TRUNCATE", b"GRANT", b"REVOKE")


@dataclass(frozen=True)
class Found:
    """One archived DML transaction and what it changed."""

    where: Located
    tables: dict[str, list[str]]  # db.table -> row operations seen (insert/update/delete)

    def to_dict(self) -> dict[str, Any]:
        return {**self.where.to_dict(), "tables": self.tables}


def undo_sql(
    store: ObjectStore,
    repo: repository.Repository,
    ref: TxRef,
    workdir: Path,
    fetcher: Fetcher | None = None,
) -> tuple[Found, str]:
    """The transaction and the reviewed-by-a-human inverse SQL for it; objects come through
    `fetcher` (the restore commands' shared cache; without one, a cache next to `workdir`).
    `ref` names a transaction of the chosen timeline's history only: one found only on a
    branch that history abandoned is refused (TransactionOffTimeline, naming its timeline)."""
    fetcher = fetcher or Fetcher(ObjectCache(workdir.parent / "objects"))
    if isinstance(ref, GtidTarget) and ref.uuid:
        raise UndoRefused("MySQL GTIDs: mariadb-binlog --flashback reads MariaDB binlogs only")
    elsewhere = []
    try:
        for place in tx_timelines.places(store, repo, ref, workdir, fetcher):
            if place.member:
                found, fde, body = _extract(place.path, place.tx, ref)
                return found, _flashback(found, fde, body, workdir)
            elsewhere.append(place)
    except tx_timelines.Unusable as exc:
        raise UndoRefused(str(exc)) from exc
    if elsewhere:
        raise tx_timelines.off_timeline(repo, ref, elsewhere)
    raise UndoRefused(f"transaction {ref} is not in the archive of timeline {repo.timeline}")


def _extract(path: Path, tx: Transaction, ref: TxRef) -> tuple[Found, bytes, bytes]:
    """(the transaction, the file's format description, its raw events)."""
    with open(path, "rb") as handle:
        head = handle.read(events.HEADER_SIZE + 4)
        handle.seek(4)
        fde = handle.read(int.from_bytes(head[4 + 9 : 4 + 13], "little"))
        handle.seek(tx.start.pos)
        body = handle.read(tx.end.position.pos - tx.start.pos)
    if b"MariaDB" not in fde[events.HEADER_SIZE + 2 : events.HEADER_SIZE + 52]:
        raise UndoRefused("the archive was written by MySQL: there is no flashback for it")
    alg = events.fde_checksum_alg(fde)
    tables = _check_dml(path, tx.start.pos, tx.end.position.pos, alg, str(ref))
    where = Located(str(ref), tx.start, tx.end.position, tx.end.gtid, tx.end.timestamp)
    found = Found(where, tables)
    return found, _closed(fde, alg), body


def _check_dml(path: Path, start: int, end: int, alg: int, ref: str) -> dict[str, list[str]]:
    """The tables and row operations of a row-only DML transaction; UndoRefused otherwise."""
    tables: dict[str, list[str]] = {}
    current = ""
    for offset, raw, _alg in file_events(path, start):
        if offset >= end:
            break
        kind = raw[4]
        if kind == events.MARIADB_GTID:
            _gtid, flags2 = events.mariadb_gtid(raw, events.Header.parse(raw).server_id)
            if flags2 & events.MARIADB_GTID_STANDALONE:
                raise UndoRefused(f"{ref} is a DDL or other standalone statement")
        elif kind in (events.QUERY, compressed.QUERY_COMPRESSED):
            _check_statement(compressed.query_text(raw, alg), ref)
        elif kind == TABLE_MAP:
            current = _table_name(raw)
            tables.setdefault(current, [])
        elif kind in _ROWS:
            if _ROWS[kind] not in tables.setdefault(current, []):
                tables[current].append(_ROWS[kind])
        elif kind not in _FRAMING:
            raise UndoRefused(f"{ref} holds an event of type {kind}, not only row changes")
    if not any(tables.values()):
        raise UndoRefused(f"{ref} changed no rows: nothing to invert")
    return tables


def _check_statement(text: bytes, ref: str) -> None:
    statement = text.strip()
    if statement.upper() in _ENDS:
        return
    shown = statement[:120].decode(errors="replace")
    kind = "DDL" if statement.upper().startswith(_DDL) else "a statement-format statement"
    raise UndoRefused(f"{ref} holds {kind} ({shown}); only row-format DML can be inverted")


def _table_name(raw: bytes) -> str:
    """`db.table` of a TABLE_MAP event (table id 6 bytes, flags 2, then the names)."""
    at = events.HEADER_SIZE + 8
    db_len = raw[at]
    db = raw[at + 1 : at + 1 + db_len].decode(errors="replace")
    at += 1 + db_len + 1
    table = raw[at + 1 : at + 1 + raw[at]].decode(errors="replace")
    return f"{db}.{table}"


def _closed(fde: bytes, alg: int) -> bytes:
    """The format description without the in-use flag (the extract is a whole file)."""
    flags = int.from_bytes(fde[17:19], "little") & ~events.FLAG_IN_USE
    body = fde[:17] + flags.to_bytes(2, "little") + fde[19:]
    if alg != events.CHECKSUM_CRC32:
        return body
    return events.with_checksum(body[: -events.CHECKSUM_SIZE])


def _flashback(found: Found, fde: bytes, body: bytes, workdir: Path) -> str:
    tool = shutil.which("mariadb-binlog")
    if tool is None:
        raise UndoRefused("mariadb-binlog is not on PATH (install the MariaDB client)")
    extract = workdir / "transaction.bin"
    extract.write_bytes(events.MAGIC + fde + body)
    done = subprocess.run(
        [tool, "--flashback", "--verbose", str(extract)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise UndoRefused(f"mariadb-binlog --flashback exited {done.returncode}: {done.stderr}")
    return header(found) + done.stdout


def header(found: Found) -> str:
    where = found.where
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(where.commit_time))
    touched = ", ".join(f"{t} ({'/'.join(ops)})" for t, ops in found.tables.items())
    lines = [
        f"backupd undo preview of transaction {where.gtid or where.ref} committed {when}",
        f"archived at {where.start} .. {where.end}; it changed {touched}",
        "the statements below invert its row changes, newest first, as one transaction;",
        "review them: rows changed again since then may not match. backupd never applies this.",
    ]
    return "".join(f"-- {line}\n" for line in lines)
