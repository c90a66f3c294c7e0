"""Cron expressions as crontab(5) reads them, and an APScheduler trigger that fires by them.

APScheduler's own CronTrigger ANDs day-of-month and day-of-week and counts weekdays from
Monday; crontab(5) fires on either day when both fields are restricted (neither starts with
`*`), counts Sunday as 0 and 7, and knows `@daily` and friends. So the rules live here, as
a parser to sets of allowed values plus a search for the next matching minute in the
schedule's time zone. A local time skipped by a DST change fires at the same offset after
the change; a repeated one fires once (its first occurrence).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_NAMES = {name: number for number, name in enumerate(_MONTHS, start=1)}
_DAY_NAMES = {name: number for number, name in enumerate(_DAYS)}
_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Every (date, weekday) combination recurs within 28 years; a search that long is exhaustive.
SEARCH_DAYS = 28 * 366


@dataclass(frozen=True)
class CronSpec:
    """The allowed values of each field; weekdays 0..6 with Sunday 0."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_or_weekday: bool  # both day fields restricted: either one matching is enough

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        return by_day or by_weekday if self.day_or_weekday else by_day and by_weekday

    def matches(self, local: dt.datetime) -> bool:
        """Does this wall-clock minute match (the brute-force definition)?"""
        return (
            local.minute in self.minutes
            and local.hour in self.hours
            and self.matches_day(local.date())
        )


def parse_cron(text: str) -> CronSpec:
    """Parse 5 fields or a macro; ValueError says which field is wrong and why."""
    expression = text.strip()
    if expression.startswith("@"):
        if expression.lower() not in MACROS:
            raise ValueError(f"unknown macro {expression} (known: {', '.join(MACROS)})")
        expression = MACROS[expression.lower()]
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day month weekday) or a macro such as @daily, "
            f"got {len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    spec = CronSpec(
        minutes=_field(minute, "minute", 0, 59, {}),
        hours=_field(hour, "hour", 0, 23, {}),
        days=_field(day, "day-of-month", 1, 31, {}),
        months=_field(month, "month", 1, 12, _MONTH_NAMES),
        weekdays=frozenset(d % 7 for d in _field(weekday, "day-of-week", 0, 7, _DAY_NAMES)),
        day_or_weekday=not day.startswith("*") and not weekday.startswith("*"),
    )
    if not spec.day_or_weekday and not any(
        day_number <= _LONGEST_MONTH[month_number - 1]
        for month_number in spec.months
        for day_number in spec.days
    ):
        raise ValueError("never fires: no month in the month field has that day")
    return spec


def _field(text: str, what: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"{what} field {text!r}: step {step_text!r} is not a number above 0")
        step = int(step_text) if slash else 1
        if span == "*":
            first, last = low, high
        else:
            start, dash, end = span.partition("-")
            first = _number(start, what, text, names)
            # "5/15" is "5-<highest>/15", as in Vixie cron
            last = _number(end, what, text, names) if dash else high if slash else first
        for value in (first, last):
            if not low <= value <= high:
                raise ValueError(f"{what} field {text!r}: {value} is outside {low}-{high}")
        if first > last:
            raise ValueError(f"{what} field {text!r}: range {first}-{last} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(token: str, what: str, text: str, names: dict[str, int]) -> int:
    if token.isdigit():
        return int(token)
    if token.lower() in names:
        return names[token.lower()]
    raise ValueError(f"{what} field {text!r}: {token!r} is not a number or name")


def zone(name: str) -> dt.tzinfo:
    """The time zone a schedule runs in: UTC needs no tz database, others an IANA name."""
    if name == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: expected an IANA name such as Europe/Berlin "
            "(from the system tz database, package tzdata)"
        ) from exc


def next_fire(spec: CronSpec, tz: dt.tzinfo, start: dt.datetime) -> dt.datetime | None:
    """The first matching minute at or after `start` (aware), in `tz`; None if none exists."""
    day = start.astimezone(tz).date()
    for _ in range(SEARCH_DAYS):
        if spec.matches_day(day):
            found = [
                instant
                for hour in spec.hours
                for minute in spec.minutes
                if (instant := dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz))
                >= start
            ]
            if found:  # min, not first: a DST gap moves skipped times past later ones
                return min(when.astimezone(dt.UTC) for when in found).astimezone(tz)
        day += dt.timedelta(days=1)
    return None


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]  # apscheduler is untyped
    """An APScheduler trigger firing by crontab(5) rules in a time zone, with jitter."""

    def __init__(self, text: str, timezone: str = "UTC", jitter: int = 0) -> None:
        self.text = text
        self.spec = parse_cron(text)
        self.timezone = zone(timezone)
        self.jitter = jitter

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        start = now.astimezone(dt.UTC)
        if previous_fire_time is not None:  # as APScheduler's CronTrigger: misfires count
            start = min(start, previous_fire_time + dt.timedelta(microseconds=1))
        if start.second or start.microsecond:
            start = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        due = next_fire(self.spec, self.timezone, start)
        return self._apply_jitter(due, self.jitter, now)  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return f"cron[{self.text}, {self.timezone}]"


def trigger_for(cron: str, jitter: int = 0, timezone: str = "UTC") -> CronScheduleTrigger:
    """The trigger for a schedule; jitter delays each run by up to `jitter` random seconds."""
    return CronScheduleTrigger(cron, timezone, jitter)
