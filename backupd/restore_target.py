"""TARGET, the point a restore reaches: a time, a GTID, a binlog coordinate, or `latest`.

Parsing is pure and strict: an operator at 3 a.m. gets a refusal that says what was
expected, never a guess. A leaf (it needs only the error catalogue): the config validates
`drill.target` with it, and the restore package builds on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from backupd.errors import UsageError

_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_MYSQL_GTID = re.compile(
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}):(\d+)$"
)
_COORDINATE = re.compile(r"^([A-Za-z0-9_.\-]+\.\d{6,}):(\d+)$")


@dataclass(frozen=True)
class TimeTarget:
    """Every transaction committed at or before `at` (UTC)."""

    at: datetime

    def __str__(self) -> str:
        return self.at.strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def timestamp(self) -> int:
        return int(self.at.timestamp())


@dataclass(frozen=True)
class GtidTarget:
    """Up to and including this transaction. MariaDB: domain-server-seq; MySQL: uuid:N."""

    text: str
    domain: int = 0
    server_id: int = 0
    sequence: int = 0
    uuid: str = ""

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class CoordinateTarget:
    """Replay up to this end position in this binlog file (a transaction boundary)."""

    file: str
    position: int

    def __str__(self) -> str:
        return f"{self.file}:{self.position}"


@dataclass(frozen=True)
class LatestTarget:
    """The newest archived transaction."""

    def __str__(self) -> str:
        return "latest"


Target = TimeTarget | GtidTarget | CoordinateTarget | LatestTarget


def parse_target(text: str) -> Target:
    raw = text.strip()
    if raw.lower() == "latest":
        return LatestTarget()
    if match := _MARIADB_GTID.match(raw):
        domain, server_id, sequence = (int(part) for part in match.groups())
        return GtidTarget(raw, domain=domain, server_id=server_id, sequence=sequence)
    if match := _MYSQL_GTID.match(raw):
        return GtidTarget(raw, uuid=match.group(1).lower(), sequence=int(match.group(2)))
    if match := _COORDINATE.match(raw):
        position = int(match.group(2))
        if position < 4:
            raise UsageError(f"binlog position {position} is before the first event (4)")
        return CoordinateTarget(match.group(1), position)
    return TimeTarget(parse_time(raw))


def parse_time(raw: str) -> datetime:
    """ISO-8601 with an explicit zone (Z or +hh:mm); a naive time is refused, not assumed."""
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError as exc:
        raise UsageError(
            f"not a restore target: {raw!r} (expected an ISO-8601 time like "
            "2026-11-26T10:15:00Z, a GTID like 0-1-4242 or uuid:N, a coordinate like "
            "mysql-bin.000042:1234, or 'latest')"
        ) from exc
    if moment.tzinfo is None:
        raise UsageError(f"time {raw!r} has no zone: add Z for UTC or an offset like +02:00")
    return moment.astimezone(UTC)
