"""Whether an archived transaction belongs to a timeline's history. Pure.

A timeline's history is its own transactions plus each ancestor's up to the point where the
next timeline of its lineage branched off. Past that point an ancestor holds a branch the
later timeline abandoned, and the same GTID may name another transaction there (a restored
server put in service under its old server_id reuses the sequence numbers). Undo, restore
targets around a transaction and `find` all ask here, so they agree on what a name means.
"""

from __future__ import annotations

from dataclasses import dataclass

from backupd.binlog import layout
from backupd.binlog.archive import ArchiveView, History, gtid_position, parse_gtid


@dataclass(frozen=True)
class Membership:
    """`member`: True (in the history), False (on an abandoned branch) or None (cannot
    tell: the branch point is not known exactly); `why` says which for a refusal."""

    member: bool | None
    why: str = ""


IN_HISTORY = Membership(True)


def membership(
    view: ArchiveView | None, chosen: int, timeline: int, end_file: str, end_pos: int, gtid: str
) -> Membership:
    """Whether the transaction of `timeline` ending at `end_file:end_pos` (with `gtid`, ""
    if none) is part of timeline `chosen`'s history."""
    if view is None or timeline == chosen:
        return IN_HISTORY
    lineage = [t.id for t in view.lineage(chosen)]
    if timeline not in lineage:
        return Membership(False, f"timeline {timeline} is not an ancestor of timeline {chosen}")
    child = view.get(lineage[lineage.index(timeline) + 1]).history
    if child.crossable:
        if _order(end_file, end_pos) <= _position(child.parent_end):
            return IN_HISTORY
        return Membership(
            False, f"after {child.parent_end}, where timeline {child.timeline} branched off"
        )
    return _by_gtid(child, gtid)


def _by_gtid(child: History, gtid: str) -> Membership:
    """Without an exact branch point, only a GTID past the position the child's server had
    when it began proves a transaction abandoned; anything earlier may or may not be shared."""
    parsed = parse_gtid(gtid)
    began = gtid_position(child.gtid)
    if parsed is not None and parsed[0] in began and parsed[1] > began[parsed[0]]:
        return Membership(
            False,
            f"after GTID position {child.gtid}, where timeline {child.timeline} began",
        )
    return Membership(
        None,
        f"timeline {child.timeline} began by {child.reason} at a branch point not known "
        "exactly, so its history may or may not include it",
    )


def _position(text: str) -> tuple[tuple[str, int], int]:
    file, _, pos = text.rpartition(":")
    return _order(file, int(pos))


def _order(file: str, pos: int) -> tuple[tuple[str, int], int]:
    return layout.file_order(file), pos
