"""Which snapshot sets to keep: a pure function of the catalog, the rules and the time.

A set is kept if any rule keeps it (keep_last, hourly, daily, weekly, monthly, yearly, as in
sanoid and ec2-expire-snapshots). Only completed sets this daemon owns are candidates; the
newest of them is always kept; pending sets and other owners' sets are never touched. Failed
and skipped records older than the newest completed set are dropped (they are only history).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backupd.config import RetentionSection
from backupd.snapshot.catalog import COMPLETED, FAILED, SKIPPED, SnapshotSet

PERIODS: dict[str, Callable[[time.struct_time], tuple[int, ...]]] = {
    "hourly": lambda t: (t.tm_year, t.tm_yday, t.tm_hour),
    "daily": lambda t: (t.tm_year, t.tm_yday),
    "weekly": lambda t: tuple(_iso_week(t)),
    "monthly": lambda t: (t.tm_year, t.tm_mon),
    "yearly": lambda t: (t.tm_year,),
}


def _iso_week(t: time.struct_time) -> tuple[int, int]:
    import datetime as dt

    year, week, _ = dt.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
    return year, week


@dataclass
class RetentionPlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # set id -> rules keeping it
    delete: list[str] = field(default_factory=list)


def plan_retention(sets: list[SnapshotSet], rules: RetentionSection, owner: str) -> RetentionPlan:
    plan = RetentionPlan()
    mine = [s for s in sets if s.owner == owner]
    done = sorted(
        (s for s in mine if s.state == COMPLETED), key=lambda s: (s.started_at, s.set_id),
        reverse=True,
    )  # fmt: skip
    for record in done[: rules.keep_last]:
        plan.keep.setdefault(record.set_id, []).append("keep_last")
    for name, period_of in PERIODS.items():
        count = getattr(rules, name)
        seen: list[tuple[int, ...]] = []
        for record in done:  # newest first: the newest set of each period stands for it
            period = period_of(time.gmtime(record.started_at))
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(period)
            plan.keep.setdefault(record.set_id, []).append(name)
    if done:
        plan.keep.setdefault(done[0].set_id, []).append("newest")
    newest = done[0].started_at if done else 0.0
    for record in mine:
        if (record.state == COMPLETED and record.set_id not in plan.keep) or (
            record.state in (FAILED, SKIPPED) and record.started_at < newest
        ):
            plan.delete.append(record.set_id)
    return plan
