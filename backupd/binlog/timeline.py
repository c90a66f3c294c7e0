"""When the archive must start a new timeline, and whether a plan may cross into it. Pure.

Continuity holds only when the server the daemon streams from is the one that wrote the
archive's latest timeline, still holds its files as archived, and its data contains what was
archived. Any break starts a new timeline (never new objects under old keys):

- `failover`: another server identity (a promoted replica, the daemon re-pointed);
- `reset`: the same server's file numbers repeat or rewind, or a file's first bytes differ
  from the archive's (RESET MASTER) while the server that wrote the archive kept running;
- `promotion`: the same, but the server restarted meanwhile (a restored server put in
  service: its data may stop anywhere before the archive's end);
- `rewind`: the server's file is shorter than archived, or its GTID position no longer
  contains the archive's end (a crash with `sync_binlog != 1` lost a tail).

A new timeline can be crossed by a plan only at an exact branch point: the parent's last
archived transaction boundary, when the server's data provably contains it (its GTID
position contains the archive's end). Otherwise the timeline records its parent for lineage
but no plan crosses it: a restore after that point needs a snapshot taken on it. Being the
same server process is not proof: a RESET MASTER while the archive lagged would lose the
unarchived tail between the parent's end and the child's start.
"""

from __future__ import annotations

from dataclasses import dataclass

from backupd.binlog import layout


@dataclass(frozen=True)
class ArchiveEnd:
    """What the latest timeline holds."""

    timeline: int
    identity: str
    file: str  # last archived file ("" = nothing archived yet)
    position: int  # end of its contiguous prefix
    closed: bool
    boundary: str  # last transaction boundary "file:pos" ("" = none)
    gtid: dict[int, int]  # domain -> highest sequence archived (empty = no GTIDs seen)
    last_time: int  # newest event timestamp archived


@dataclass(frozen=True)
class ServerView:
    """What the server says now."""

    identity: str
    logs: list[tuple[str, int]]  # SHOW BINARY LOGS
    gtid: dict[int, int] | None  # domain -> sequence of its GTID position; None = unknown
    started_at: float  # server start time (now - Uptime)
    head_matches: bool | None  # first bytes of the archive's last file equal the server's
    # (None: the file is not on the server or was not compared)
    gtid_text: str = ""  # the GTID position as the server wrote it (for the history)


@dataclass(frozen=True)
class Decision:
    branch: bool
    reason: str = ""
    parent_end: str = ""  # exact crossing point on the parent ("" = not crossable)
    why: str = ""


CONTINUE = Decision(False)


def contains(server: dict[int, int] | None, archived: dict[int, int]) -> bool | None:
    """Whether a GTID position includes every archived sequence (None when unknowable)."""
    if server is None or not archived:
        return None
    return all(server.get(domain, -1) >= sequence for domain, sequence in archived.items())


def decide(end: ArchiveEnd, server: ServerView) -> Decision:  # noqa: PLR0911 (one rule each)
    """Continue the latest timeline, or begin a new one (and whether it is crossable)."""
    if not end.file:
        return CONTINUE
    has_end = contains(server.gtid, end.gtid)
    crossing = end.boundary if has_end else ""
    if server.identity != end.identity:
        return Decision(
            True,
            "failover",
            crossing,
            f"server identity {server.identity} differs from {end.identity}, which wrote "
            f"timeline {end.timeline}"
            + ("" if has_end else "; its GTID position does not contain the archive's end"),
        )
    sizes = dict(server.logs)
    if end.file in sizes:
        if server.head_matches is False:
            return _restarted(end, server, crossing, f"{end.file} on the server is another file")
        if sizes[end.file] < end.position:
            return Decision(
                True,
                "rewind",
                "",
                f"the server's {end.file} is {sizes[end.file]} bytes; the archive holds "
                f"{end.position} (a crash lost a tail it had written, or a restored copy "
                "was put in service)",
            )
    else:
        newer = [n for n, _ in server.logs if layout.file_order(n) > layout.file_order(end.file)]
        if not newer:
            return _restarted(
                end,
                server,
                crossing,
                f"the server's binlog numbers restart ({server.logs[0][0] if server.logs else '-'}"
                f" after {end.file})",
            )
    if has_end is False:
        return Decision(
            True,
            "rewind",
            "",
            "the server's GTID position no longer contains the archive's end",
        )
    return CONTINUE


def _restarted(end: ArchiveEnd, server: ServerView, crossing: str, what: str) -> Decision:
    """The same server's binlog history began again: RESET MASTER, or a restored server."""
    if server.started_at <= end.last_time:
        return Decision(True, "reset", crossing, f"{what}: RESET MASTER on the running server")
    return Decision(
        True,
        "promotion",
        crossing,
        f"{what}, and the server restarted since the archive's last event: a restored "
        "server put in service? Its branch point is not known exactly",
    )
