"""Table-level restore: `drill --tables db.t,... --dump FILE`.

The drill replays EVERY transaction into its scratch server and dumps only the chosen
tables. Filtering the replay instead (mariadb-binlog --table/--database) is not exact: a
transaction touching several tables, INSERT ... SELECT from another table, triggers, foreign
keys and statement-format events all need the other tables at their true state, and a
filtered replay would silently produce wrong rows. The dump (`mariadb-dump`, one
consistent read) carries the target instant in its header, so an operator can reload one
table into production without touching the rest.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.errors import TableDumpFailed, UsageError
from backupd.restore.prepare import Prepared
from backupd.restore.scratch import ScratchServer

_NAME = re.compile(r"^([A-Za-z0-9_$]+)\.([A-Za-z0-9_$]+)$")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tables",
        metavar="DB.T,...",
        help="with --dump: write a mariadb-dump of these tables at the target",
    )
    parser.add_argument("--dump", metavar="FILE", help="where --tables writes its dump (new file)")


def parse_tables(text: str) -> list[tuple[str, str]]:
    tables = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        match = _NAME.match(part)
        if match is None:
            raise UsageError(f"--tables: {part!r} is not db.table")
        tables.append((match.group(1), match.group(2)))
    if not tables:
        raise UsageError("--tables: name at least one db.table")
    return list(dict.fromkeys(tables))


@dataclass(frozen=True)
class Request:
    tables: list[tuple[str, str]]
    path: Path

    def write(self, scratch: ScratchServer, prepared: Prepared) -> dict[str, Any]:
        """Dump the tables from the scratch server at the target; the file appears whole."""
        self._check_exist(scratch)
        body = [header(prepared, self.tables)]
        for schema in dict.fromkeys(db for db, _ in self.tables):
            names = [table for db, table in self.tables if db == schema]
            body.append(f"\nUSE `{schema}`;\n")
            body.append(_dump(scratch, schema, names))
        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            partial.write_text("".join(body))
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        return {
            "file": str(self.path),
            "tables": [f"{db}.{table}" for db, table in self.tables],
            "bytes": self.path.stat().st_size,
        }

    def _check_exist(self, scratch: ScratchServer) -> None:
        with scratch.connect() as conn, conn.cursor() as cursor:
            missing = []
            for db, table in self.tables:
                cursor.execute(
                    "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                    "AND table_name = %s AND table_type = 'BASE TABLE'",
                    (db, table),
                )
                if cursor.fetchone() is None:
                    missing.append(f"{db}.{table}")
        if missing:
            raise TableDumpFailed(f"no table {', '.join(missing)} at the restore target")


def request(args: argparse.Namespace) -> Request | None:
    """Checked before the drill starts: a typo must not cost a whole drill."""
    if args.tables is None and args.dump is None:
        return None
    if args.tables is None or args.dump is None:
        raise UsageError("--tables and --dump go together (which tables, and where to)")
    path = Path(args.dump).absolute()
    if path.exists():
        raise UsageError(f"--dump {path} exists; refusing to overwrite it")
    if not path.parent.is_dir():
        raise UsageError(f"--dump {path}: no directory {path.parent}")
    return Request(parse_tables(args.tables), path)


def header(prepared: Prepared, tables: list[tuple[str, str]]) -> str:
    doc = prepared.to_dict()
    end = doc["end"]
    when = end["commit_time"]
    lines = [
        f"backupd table restore of {', '.join(f'{db}.{t}' for db, t in tables)}",
        f"target: {doc['target']}",
        f"end point: {end['coordinate']}, last transaction {end['gtid'] or '-'} committed "
        + (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) if when else "-"),
        f"GTID position at the target: {end['gtid_state'] or '-'}",
        f"snapshot set: {doc['snapshot']['set_id']} at {doc['snapshot']['coordinate']}",
    ]
    lines += [f"skipped: {s['named']} ({s['from']} .. {s['to']})" for s in doc["skipped"]]
    lines.append("reloading it drops and recreates these tables only")
    return "".join(f"-- {line}\n" for line in lines)


def _dump(scratch: ScratchServer, schema: str, tables: list[str]) -> str:
    tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    if tool is None:
        raise TableDumpFailed("neither mariadb-dump nor mysqldump is on PATH")
    done = subprocess.run(
        [tool, f"--socket={scratch.socket}", "--user=root", "--single-transaction",
         "--skip-dump-date", "--", schema, *tables],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise TableDumpFailed(f"{Path(tool).name} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout
