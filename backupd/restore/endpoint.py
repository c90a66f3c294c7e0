"""The exact end point of a restore, resolved from the rebuilt binlog events.

A restore stops only at a transaction boundary: time = the last transaction committed at or
before T; GTID = the end of that transaction; coordinate = must already be a boundary (else
refused, naming the nearest ones); latest = the last complete transaction archived. The walk
also yields the GTID state the server must report after the replay.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from backupd.binlog import compressed, events
from backupd.restore import mysql_gtid
from backupd.restore.plan import Gtid, Position, RestoreImpossible, gtid_state
from backupd.restore_target import (
    CoordinateTarget,
    GtidTarget,
    LatestTarget,
    Target,
    TimeTarget,
)

_ENDS = (b"COMMIT", b"ROLLBACK")
# WRITE/UPDATE/DELETE_ROWS v1 and v2, and MariaDB's compressed forms
_ROW_EVENTS = frozenset((23, 24, 25, 30, 31, 32, 166, 167, 168, 169, 170, 171))


@dataclass(frozen=True)
class Boundary:
    """The end of one transaction: replaying up to `position` includes it."""

    position: Position
    gtid: str  # MariaDB domain-server-seq, "" when the server writes none we read
    timestamp: int
    rows: bool = False  # carries row events: the target binlogs it whatever its format


@dataclass(frozen=True)
class EndPoint:
    position: Position
    gtid: str  # last transaction's GTID ("" = none replayed or not MariaDB)
    commit_time: int  # its timestamp (0 = none replayed)
    transactions: int  # to replay after the snapshot's coordinate
    gtid_state: str  # the GTID position the server reports afterwards (MariaDB)
    # The state after the last transaction with row events: a target in ROW format does not
    # binlog statement-only temporary-table work after it, so its position may stop there.
    gtid_floor: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "coordinate": str(self.position),
            "gtid": self.gtid,
            "commit_time": self.commit_time,
            "transactions": self.transactions,
            "gtid_state": self.gtid_state,
            "gtid_floor": self.gtid_floor,
        }


def file_events(path: Path, start: int) -> Iterator[tuple[int, bytes, int]]:
    """(offset, raw event, checksum alg) from `start` on; each event's size and CRC checked.

    The format description at offset 4 is always read: it says whether events carry a CRC."""
    with open(path, "rb") as handle:
        if path.stat().st_size <= 4:
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            alg = events.CHECKSUM_OFF
            offset = 4
            size = len(data)
            while offset + events.HEADER_SIZE <= size:
                length = int.from_bytes(data[offset + 9 : offset + 13], "little")
                if length < events.HEADER_SIZE or offset + length > size:
                    return  # an archived tail inside an event: not an event yet
                raw = data[offset : offset + length]
                if raw[4] == events.FORMAT_DESCRIPTION:
                    alg = events.fde_checksum_alg(raw)
                events.verify(raw, alg)
                if offset >= start and raw[4] != events.FORMAT_DESCRIPTION:
                    yield offset, raw, alg
                offset += length


# Events that are no part of any transaction: file headers, rotations, GTID lists.
_METADATA = frozenset(
    (
        events.STOP,
        events.ROTATE,
        events.FORMAT_DESCRIPTION,
        events.HEARTBEAT,
        events.MYSQL_PREVIOUS_GTIDS,
        events.MARIADB_BINLOG_CHECKPOINT,
        events.MARIADB_GTID_LIST,
    )
)


class _Transactions:
    """Feed events; collect the boundary each complete transaction ends at.

    MariaDB: GTID, then BEGIN .. XID/COMMIT or one standalone statement. MySQL 5.7+: GTID or
    ANONYMOUS_GTID, then the same, or (8.0.20+) one TRANSACTION_PAYLOAD holding them all."""

    def __init__(self) -> None:
        self.open = False
        self.expect_commit: bool | None = None  # None: MySQL, decided by the first QUERY
        self.gtid = ""
        self.timestamp = 0
        self.rows = False
        self.unended: list[int] = []  # types of the events seen since the last boundary

    def feed(self, file: str, offset: int, raw: bytes, alg: int) -> Boundary | None:
        header = events.Header.parse(raw)
        if header.type_code not in _METADATA:
            self.unended.append(header.type_code)
        if header.type_code == events.MYSQL_TRANSACTION_PAYLOAD:
            ended = self._payload(header, raw, alg)
        else:
            ended = self._ends(header, raw, alg)
        return self._end(file, offset + header.event_size) if ended else None

    def _payload(self, header: events.Header, raw: bytes, alg: int) -> bool:
        """A compressed transaction: it ends where its inner events say (XID or COMMIT)."""
        if not self.open:
            self._begin("", None)
        self.timestamp = max(self.timestamp, header.timestamp)
        ended = False
        for inner in events.payload_events(raw, alg):
            ended = self._ends(events.Header.parse(inner), inner, events.CHECKSUM_OFF) or ended
        return ended

    def _ends(self, header: events.Header, raw: bytes, alg: int) -> bool:
        """Whether the transaction ends with this event."""
        kind = header.type_code
        if kind == compressed.QUERY_COMPRESSED:  # log_bin_compress: a QUERY all the same
            kind, raw = compressed.expand(raw, alg)
        if kind == events.MARIADB_GTID:
            gtid, flags2 = events.mariadb_gtid(raw, header.server_id)
            self._begin(gtid, not flags2 & events.MARIADB_GTID_STANDALONE)
        elif kind == events.MYSQL_GTID:
            self._begin(events.mysql_gtid(raw), None)
        elif kind == events.MYSQL_ANONYMOUS_GTID:
            self._begin("", None)
        if not self.open:
            return False
        self.timestamp = max(self.timestamp, header.timestamp)
        self.rows = self.rows or kind in _ROW_EVENTS
        if kind == events.XID:
            return True
        if kind == events.QUERY:
            text = events.query_text(raw, alg).strip().upper()
            if self.expect_commit is None:
                self.expect_commit = text == b"BEGIN"
                if self.expect_commit:
                    return False
            if not self.expect_commit or text in _ENDS:
                return True
        return False

    def _begin(self, gtid: str, expect_commit: bool | None) -> None:
        self.open, self.gtid, self.expect_commit = True, gtid, expect_commit
        self.timestamp, self.rows = 0, False

    def _end(self, file: str, end: int) -> Boundary:
        self.open = False
        self.unended = []
        return Boundary(Position(file, end), self.gtid, self.timestamp, self.rows)


def boundaries(
    files: Sequence[Path], start: Position, tracker: _Transactions | None = None
) -> Iterator[Boundary]:
    """Every transaction boundary after `start`, in order, across the files."""
    tracker = tracker or _Transactions()
    for path in files:
        begin = start.pos if path.name == start.file else 0
        for offset, raw, alg in file_events(path, begin):
            found = tracker.feed(path.name, offset, raw, alg)
            if found is not None:
                yield found


def resolve(
    files: Sequence[Path], start: Position, start_gtid: str, target: Target, flavor: str
) -> EndPoint:
    """Where the replay stops for `target`; RestoreImpossible when it is not a boundary."""
    if isinstance(target, GtidTarget) and bool(target.uuid) != (flavor == "mysql"):
        raise RestoreImpossible(
            f"{target} is a {'MySQL' if target.uuid else 'MariaDB'} GTID, but the archive "
            f"was written by {flavor or 'mariadb'}"
        )
    chosen: list[Boundary] = []
    if isinstance(target, GtidTarget) and _snapshot_has(start_gtid, target):
        return _end_point(chosen, start, start_gtid, flavor)  # nothing to replay
    tracker = _Transactions()
    for boundary in boundaries(files, start, tracker):
        verdict = _verdict(boundary, target)
        if verdict == "past":
            break
        chosen.append(boundary)
        if verdict == "hit":
            break
    else:
        _check_reached(chosen, target)
        if isinstance(target, LatestTarget):
            _check_bounded(chosen, tracker.unended)
    if isinstance(target, CoordinateTarget):
        _check_exact(chosen, target, start, files)
    if isinstance(target, GtidTarget):
        _check_gtid(chosen, target)
    if isinstance(target, TimeTarget):
        _check_monotonic(chosen, target)
    return _end_point(chosen, start, start_gtid, flavor)


def _check_monotonic(chosen: list[Boundary], target: TimeTarget) -> None:
    """Refuse a time target that commit timestamps going backwards make ambiguous.

    Binlog order is commit order, so a transaction stamped earlier than one before it (SET
    TIMESTAMP, a clock stepped back, events applied from another server) really committed
    after that one. It belongs before the target only if a later transaction, still before
    the target, is stamped at least as late as the stamp it fell below; otherwise it may have
    committed after the target, and no exact stop exists by time."""
    highest = 0
    doubtful: list[tuple[Boundary, int]] = []
    for boundary in chosen:
        doubtful = [(b, mark) for b, mark in doubtful if boundary.timestamp < mark]
        if boundary.timestamp < highest:
            doubtful.append((boundary, highest))
        highest = max(highest, boundary.timestamp)
    if doubtful:
        boundary, mark = doubtful[0]
        raise RestoreImpossible(
            f"commit timestamps go backwards before {target}: the transaction ending at "
            f"{boundary.position} is stamped {_when(boundary.timestamp)} after one stamped "
            f"{_when(mark)}, so it may have committed after the target; give a GTID or a "
            "coordinate instead"
        )


def _verdict(boundary: Boundary, target: Target) -> str:
    """'in' (include, keep going), 'hit' (include, stop) or 'past' (exclude, stop)."""
    if isinstance(target, TimeTarget):
        return "past" if boundary.timestamp > target.timestamp else "in"
    if isinstance(target, CoordinateTarget):
        goal = Position(target.file, target.position)
        if boundary.position > goal:
            return "past"
        return "hit" if boundary.position == goal else "in"
    if isinstance(target, GtidTarget):
        return "hit" if boundary.gtid == _gtid_text(target) else "in"
    return "in"


def _check_reached(chosen: list[Boundary], target: Target) -> None:
    """The walk ran out of archived events before passing the target."""
    if isinstance(target, TimeTarget):
        last = chosen[-1].timestamp if chosen else 0
        if last < target.timestamp:
            raise RestoreImpossible(
                f"target {target} is after the last complete archived transaction "
                f"({_when(last) if last else 'none after the snapshot'}); "
                "use 'latest' to restore everything archived"
            )
    # GTID and coordinate targets: _check_gtid / _check_exact name what is missing


def _check_bounded(chosen: list[Boundary], unended: list[int]) -> None:
    """Events after the snapshot in which no transaction ever ends: a format this walk
    cannot read. Replaying "zero transactions" would silently lose all of them."""
    if chosen or not unended:
        return
    kinds = ", ".join(str(kind) for kind in sorted(set(unended)))
    raise RestoreImpossible(
        f"no transaction boundary found in the {len(unended)} event(s) archived after the "
        f"snapshot (event types {kinds}); refusing to replay nothing and call it a restore"
    )


def _check_exact(
    chosen: list[Boundary], target: CoordinateTarget, start: Position, files: Sequence[Path]
) -> None:
    goal = Position(target.file, target.position)
    reached = chosen[-1].position if chosen else start
    if reached == goal:
        return
    after = _next_boundary(files, reached)
    raise RestoreImpossible(
        f"{goal} is not a transaction boundary in the archive; the nearest are {reached}"
        + (f" and {after}" if after else " (none archived after it)")
    )


def _next_boundary(files: Sequence[Path], reached: Position) -> Position | None:
    return next((b.position for b in boundaries(files, reached)), None)


def _gtid_text(target: GtidTarget) -> str:
    """As the walk writes it: MySQL uuids in lowercase."""
    return f"{target.uuid}:{target.sequence}" if target.uuid else target.text


def _snapshot_has(start_gtid: str, target: GtidTarget) -> bool:
    if target.uuid:
        return mysql_gtid.contains(start_gtid, target.uuid, target.sequence)
    have = gtid_state(start_gtid).get(target.domain)
    return have is not None and str(have) == target.text


def _check_gtid(chosen: list[Boundary], target: GtidTarget) -> None:
    if chosen and chosen[-1].gtid == _gtid_text(target):
        return
    raise RestoreImpossible(f"GTID {target} is not among the archived transactions")


def _end_point(chosen: list[Boundary], start: Position, start_gtid: str, flavor: str) -> EndPoint:
    if flavor == "mysql":
        state = floor = ""
    else:
        state = _state_after(start_gtid, chosen)
        last_rows = max((i for i, b in enumerate(chosen) if b.rows), default=-1)
        floor = _state_after(start_gtid, chosen[: last_rows + 1])
    if not chosen:
        return EndPoint(start, "", 0, 0, state, floor)
    last = chosen[-1]
    return EndPoint(last.position, last.gtid, last.timestamp, len(chosen), state, floor)


def _state_after(start_gtid: str, chosen: list[Boundary]) -> str:
    state = gtid_state(start_gtid)
    for boundary in chosen:
        if boundary.gtid:
            gtid = Gtid.parse(boundary.gtid)
            state[gtid.domain] = gtid
    return ",".join(str(state[d]) for d in sorted(state))


def _when(stamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


@dataclass(frozen=True)
class Transaction:
    """One archived transaction: where its first event starts and where it ends."""

    start: Position  # its first event (the `# at` of its GTID event)
    end: Boundary


def transactions(files: Sequence[Path], start: Position) -> Iterator[Transaction]:
    """Every complete transaction after `start`, in order, with its start and its end."""
    tracker = _Transactions()
    first: Position | None = None
    for path in files:
        begin = start.pos if path.name == start.file else 0
        for offset, raw, alg in file_events(path, begin):
            if first is None and raw[4] not in _METADATA:
                first = Position(path.name, offset)
            found = tracker.feed(path.name, offset, raw, alg)
            if found is not None:
                yield Transaction(first or found.position, found)
                first = None


def end_point(
    chosen: Sequence[Boundary], start: Position, start_gtid: str, flavor: str
) -> EndPoint:
    """The end point after replaying exactly the `chosen` transactions from `start`."""
    return _end_point(list(chosen), start, start_gtid, flavor)
