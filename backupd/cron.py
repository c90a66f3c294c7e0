"""Cron expressions (five fields, UTC) as APScheduler triggers, and whether a run was missed.

A leaf (APScheduler only): the config validates schedules with it, and the snapshot
schedule and the drill service run them.
"""

from __future__ import annotations

import datetime as dt

from apscheduler.triggers.cron import CronTrigger

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_weekdays(field: str) -> str:
    """Cron's day-of-week numbers (0 and 7 = Sunday) as names: APScheduler 3 counts from
    Monday, so "1-5" would otherwise mean Tuesday..Saturday. Names and `*` pass through."""
    out = []
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*" and step.isdigit():
            span = "0-6"
        first, _, last = span.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            out.append(part)
            continue
        if not last and not step:
            out.append(_CRON_DAYS[int(first) % 8])
            continue
        end = int(last) if last else 7
        days = range(int(first), end + 1, int(step or 1))
        out.extend(_CRON_DAYS[day % 8] for day in days)
    return ",".join(dict.fromkeys(out))


def trigger_for(cron: str, jitter: int = 0) -> CronTrigger:
    """The cron trigger (UTC); jitter delays each run by up to `jitter` random seconds."""
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=cron_weekdays(day_of_week),
        timezone=dt.UTC,
        jitter=jitter or None,
    )


def missed_run(cron: str, last_run_at: float, now: float) -> bool:
    """True when a scheduled time passed since the last run (the daemon was down then).

    No run recorded at all is not a miss: a fresh install waits for its schedule.
    """
    if last_run_at <= 0:
        return False
    after = dt.datetime.fromtimestamp(last_run_at, dt.UTC)
    due = trigger_for(cron).get_next_fire_time(None, after + dt.timedelta(seconds=1))
    return due is not None and due.timestamp() <= now
