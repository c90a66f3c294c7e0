"""Targets around one transaction: stop right before it (`--before`), or replay everything
except it (`--skip`, repeatable).

A transaction is named by its GTID or by the coordinate its first event starts at (the
`pos` `backupctl find` prints). A skip splits the replay at the skipped transaction: one
range up to its first event, the next from its end, all through the one client session.
Later transactions may depend on the skipped rows; the replay then stops with the
server's error at the first conflict (the client runs without --force).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.binlog import layout
from backupd.errors import UsageError
from backupd.restore.endpoint import EndPoint, Transaction, end_point, resolve, transactions
from backupd.restore.plan import Position, RestoreImpossible, gtid_state
from backupd.restore.replay import ReplayRange
from backupd.restore_target import CoordinateTarget, GtidTarget, Target, parse_target

TxRef = GtidTarget | CoordinateTarget

SKIP_WARNING = (
    "skipping {names}: transactions after it may have depended on its rows; the replay "
    "stops with the server's error at the first conflict"
)


def parse_ref(text: str, option: str) -> TxRef:
    """A GTID or a binlog coordinate (where the transaction's first event starts)."""
    try:
        ref = parse_target(text)
    except UsageError:
        ref = None
    if not isinstance(ref, GtidTarget | CoordinateTarget):
        raise UsageError(
            f"{option} {text!r}: expected a GTID like 0-1-4242 or a coordinate like "
            "mysql-bin.000042:1234 (where the transaction starts, as `backupctl find` prints)"
        )
    return ref


def matches(tx: Transaction, ref: TxRef) -> bool:
    if isinstance(ref, GtidTarget):
        return bool(tx.end.gtid) and tx.end.gtid == ref.text
    return tx.start == Position(ref.file, ref.position)


@dataclass(frozen=True)
class Located:
    """A transaction the operator named, found in the archive (a skip, an undo)."""

    ref: str  # as the operator named it
    start: Position
    end: Position
    gtid: str
    commit_time: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "named": self.ref,
            "gtid": self.gtid,
            "from": str(self.start),
            "to": str(self.end),
            "commit_time": self.commit_time,
        }


@dataclass(frozen=True)
class Around:
    """What `--before` and `--skip` ask of one restore."""

    before: TxRef | None = None
    skips: tuple[TxRef, ...] = ()

    @property
    def refs(self) -> tuple[TxRef, ...]:
        """Every transaction named (they must all lie in the chosen timeline's history)."""
        return (self.before, *self.skips) if self.before is not None else self.skips

    @property
    def warning(self) -> str:
        return SKIP_WARNING.format(names=", ".join(map(str, self.skips))) if self.skips else ""

    def resolve(
        self,
        files: Sequence[Path],
        start: Position,
        start_gtid: str,
        goal: Target,
        flavor: str,
        last: bool,
    ) -> tuple[EndPoint, tuple[Located, ...]]:
        """The leg's end point (right before `before` on the last leg) without the skips."""
        if last and self.before is not None:
            end = _before(files, start, start_gtid, self.before, flavor)
        else:
            end = resolve(files, start, start_gtid, goal, flavor)
        if not self.skips or not end.transactions:
            return end, ()
        return _without(files, start, start_gtid, end, self.skips, flavor)

    def check_found(self, skipped: Sequence[Located], start: Position, end: EndPoint) -> None:
        """Every --skip names a transaction this restore replays; refuse a typo, never
        restore something other than what was asked."""
        found = {s.ref for s in skipped}
        missing = [str(ref) for ref in self.skips if str(ref) not in found]
        if missing:
            raise RestoreImpossible(
                f"--skip {', '.join(missing)}: not among the transactions this restore "
                f"replays (after the snapshot's {start}, up to {end.position}); a coordinate "
                "must be where the transaction's first event starts"
            )


def _before(
    files: Sequence[Path], start: Position, start_gtid: str, ref: TxRef, flavor: str
) -> EndPoint:
    """Stop at the end of the transaction before `ref` (the snapshot itself if none)."""
    previous, previous_start = start, None
    near = ""
    for tx in transactions(files, start):
        if matches(tx, ref):
            goal = CoordinateTarget(previous.file, previous.pos)
            return resolve(files, start, start_gtid, goal, flavor)
        if isinstance(ref, CoordinateTarget) and tx.start > Position(ref.file, ref.position):
            starts = [str(p) for p in (previous_start, tx.start) if p is not None]
            near = f"; the nearest transactions start at {' and '.join(starts)}"
            break
        previous, previous_start = tx.end.position, tx.start
    if isinstance(ref, GtidTarget) and _contains(start_gtid, ref):
        near = (
            f"; the snapshot (GTID position {start_gtid}) already contains it: name it by "
            "its coordinate (as `backupctl find` prints it) so an older set is chosen"
        )
    raise RestoreImpossible(
        f"--before {ref}: no archived transaction after the snapshot's {start} "
        f"{'has this GTID' if isinstance(ref, GtidTarget) else 'starts there'}{near}"
    )


def _contains(state: str, ref: GtidTarget) -> bool:
    have = gtid_state(state).get(ref.domain)
    return have is not None and have.sequence >= ref.sequence


def _without(
    files: Sequence[Path],
    start: Position,
    start_gtid: str,
    end: EndPoint,
    skips: Sequence[TxRef],
    flavor: str,
) -> tuple[EndPoint, tuple[Located, ...]]:
    """The end point counting only the transactions replayed, and what is left out."""
    kept, skipped = [], []
    for tx in transactions(files, start):
        if tx.end.position > end.position:
            break
        named = next((ref for ref in skips if matches(tx, ref)), None)
        if named is None:
            kept.append(tx.end)
        else:
            skipped.append(Located(str(named), tx.start, tx.end.position, tx.end.gtid,
                                   tx.end.timestamp))  # fmt: skip
        if tx.end.position == end.position:
            break
    if not skipped:
        return end, ()
    counted = end_point(kept, start, start_gtid, flavor)
    return dataclasses.replace(counted, position=end.position), tuple(skipped)


def split(whole: ReplayRange, skipped: Sequence[Located]) -> list[ReplayRange]:
    """`whole` without the skipped transactions: a range up to each one's first event,
    then on from its end."""
    ranges = []
    files = list(whole.files)
    begin = Position(files[0].name, whole.start_position)
    for gap in sorted(skipped, key=lambda s: s.start):
        if gap.start > begin:
            ranges.append(ReplayRange(_files(files, begin, gap.start), begin.pos, gap.start.pos))
        begin = gap.end
    stop = whole.stop_position
    last = Position(files[-1].name, stop if stop is not None else 2**62)
    if begin < last:
        ranges.append(ReplayRange(_files(files, begin, last), begin.pos, stop))
    return ranges


def _files(files: Sequence[Path], begin: Position, stop: Position) -> list[Path]:
    low, high = begin.number, stop.number
    return [f for f in files if low <= layout.file_order(f.name)[1] <= high]
