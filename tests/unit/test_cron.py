"""Cron as crontab(5): checked against a brute-force reference written from the man page,
plus the cases operators hit (day-of-month OR day-of-week, macros, Sunday 7, time zones)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupd.cron import parse_cron, trigger_for
from backupd.snapshot.schedule import missed_run

UTC = dt.UTC
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
REFERENCE_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


# -- the reference: crontab(5) read literally, one value and one minute at a time ----------


def ref_number(token: str, names: list[str], first: int) -> int:
    return names.index(token.lower()) + first if token.lower() in names else int(token)


def ref_field_matches(text: str, value: int, low: int, high: int, names: list[str]) -> bool:
    """Does `value` match the field? Each comma part: *, N, N-M, each with an optional /S."""
    first_name = 1 if names is MONTHS else 0
    for part in text.split(","):
        span, _, step = part.partition("/")
        every = int(step) if step else 1
        if span == "*":
            start, end = low, high
        elif "-" in span:
            a, b = span.split("-")
            start, end = ref_number(a, names, first_name), ref_number(b, names, first_name)
        else:
            start = ref_number(span, names, first_name)
            end = high if step else start
        if start <= value <= end and (value - start) % every == 0:
            return True
    return False


def ref_matches(expression: str, local: dt.datetime) -> bool:
    minute, hour, dom, month, dow = REFERENCE_MACROS.get(expression, expression).split()
    weekday = local.isoweekday() % 7
    day_ok = ref_field_matches(dom, local.day, 1, 31, [])
    week_ok = ref_field_matches(dow, weekday, 0, 7, DAYS) or (
        weekday == 0 and ref_field_matches(dow, 7, 0, 7, DAYS)
    )
    both_restricted = not dom.startswith("*") and not dow.startswith("*")
    # "If both fields are restricted ... the command will be run when either field matches"
    days = (day_ok or week_ok) if both_restricted else (day_ok and week_ok)
    return (
        ref_field_matches(minute, local.minute, 0, 59, [])
        and ref_field_matches(hour, local.hour, 0, 23, [])
        and ref_field_matches(month, local.month, 1, 12, MONTHS)
        and days
    )


def ref_next(expression: str, start: dt.datetime, tz: dt.tzinfo, days: int) -> dt.datetime | None:
    """Step minute by minute (a whole day at once when its midnight-to-midnight has no match)."""
    instant = start.replace(second=0, microsecond=0)
    if instant < start:
        instant += dt.timedelta(minutes=1)
    end = start + dt.timedelta(days=days)
    while instant < end:
        local = instant.astimezone(tz)
        if ref_matches(expression, local):
            return instant
        if not day_could_match(expression, local):
            instant = (local.replace(hour=0, minute=0) + dt.timedelta(days=1)).astimezone(UTC)
            continue
        instant += dt.timedelta(minutes=1)
    return None


def day_could_match(expression: str, local: dt.datetime) -> bool:
    return ref_matches(
        " ".join(["*", "*", *REFERENCE_MACROS.get(expression, expression).split()[2:]]),
        local,
    )


# -- strategies -----------------------------------------------------------------------------


def field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    if names:
        offset = 1 if names is MONTHS else 0
        number = number | st.integers(offset, offset + len(names) - 1).map(
            lambda n: names[n - offset]
        )
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: f"{min(ab)}-{max(ab)}"
    )
    step = st.integers(1, max(2, (high - low) // 2)).map(str)
    part = st.one_of(
        st.just("*"),
        number,
        span,
        st.tuples(st.sampled_from(["*"]) | span | st.integers(low, high).map(str), step).map(
            "/".join
        ),
    )
    return st.lists(part, min_size=1, max_size=3).map(",".join)


expressions = st.one_of(
    st.tuples(
        field(0, 59),
        field(0, 23),
        field(1, 28) | field(1, 31),
        field(1, 12, MONTHS),
        field(0, 7, DAYS),
    ).map(" ".join),
    st.sampled_from(sorted(REFERENCE_MACROS)),
)
instants = st.datetimes(
    min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2030, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(expression=expressions, start=instants)
def test_next_fire_equals_the_reference(expression: str, start: dt.datetime) -> None:
    try:
        trigger = trigger_for(expression)
    except ValueError as exc:
        assert "never fires" in str(exc)
        assert ref_next(expression, start, UTC, days=1500) is None
        return
    expected = ref_next(expression, start, UTC, days=800)
    actual = trigger.get_next_fire_time(None, start)
    if expected is None:
        assert actual is None or actual >= start + dt.timedelta(days=800)
    else:
        assert actual == expected, (expression, start)


@settings(max_examples=100, deadline=None)
@given(expression=expressions, start=instants)
def test_in_a_zone_without_dst_too(expression: str, start: dt.datetime) -> None:
    tz = ZoneInfo("Asia/Kolkata")  # +05:30 all year: local fields differ from UTC's
    try:
        trigger = trigger_for(expression, timezone="Asia/Kolkata")
    except ValueError as exc:
        assert "never fires" in str(exc)
        return
    expected = ref_next(expression, start, tz, days=800)
    actual = trigger.get_next_fire_time(None, start)
    if expected is None:
        assert actual is None or actual >= start + dt.timedelta(days=800)
    else:
        assert actual == expected, (expression, start)


# -- the cases by name --------------------------------------------------------------------


def fire_times(
    expression: str, start: dt.datetime, count: int, tz: str = "UTC"
) -> list[dt.datetime]:
    trigger = trigger_for(expression, timezone=tz)
    times: list[dt.datetime] = []
    now = start
    while len(times) < count:
        due = trigger.get_next_fire_time(times[-1] if times else None, now)
        assert due is not None
        times.append(due)
        now = due + dt.timedelta(seconds=1)
    return times


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    """`0 3 1 * 1` fires on every 1st and on every Monday (it used to need both)."""
    times = fire_times("0 3 1 * 1", dt.datetime(2026, 11, 30, 4, tzinfo=UTC), 8)
    assert [t.date().isoformat() for t in times] == [
        "2026-12-01",  # a Tuesday, the 1st
        "2026-12-07",
        "2026-12-14",
        "2026-12-21",
        "2026-12-28",
        "2027-01-01",  # a Friday, the 1st
        "2027-01-04",
        "2027-01-11",
    ]
    assert all(t.day == 1 or t.isoweekday() == 1 for t in times)
    assert {t.time() for t in times} == {dt.time(3, 0)}


def test_a_starred_day_field_still_ands() -> None:
    """crontab(5): OR only when neither day field starts with `*`."""
    times = fire_times("0 0 */2 * 1", dt.datetime(2026, 11, 1, tzinfo=UTC), 4)
    assert all(t.day % 2 == 1 and t.isoweekday() == 1 for t in times)


@pytest.mark.parametrize(
    ("macro", "first"),
    [
        ("@hourly", dt.datetime(2026, 11, 27, 11, 0)),
        ("@daily", dt.datetime(2026, 11, 28, 0, 0)),
        ("@midnight", dt.datetime(2026, 11, 28, 0, 0)),
        ("@weekly", dt.datetime(2026, 11, 29, 0, 0)),  # Sunday
        ("@monthly", dt.datetime(2026, 12, 1, 0, 0)),
        ("@yearly", dt.datetime(2027, 1, 1, 0, 0)),
        ("@annually", dt.datetime(2027, 1, 1, 0, 0)),
        ("@DAILY", dt.datetime(2026, 11, 28, 0, 0)),
    ],
)
def test_macros(macro: str, first: dt.datetime) -> None:
    start = dt.datetime(2026, 11, 27, 10, 17, tzinfo=UTC)  # a Friday
    assert trigger_for(macro).get_next_fire_time(None, start) == first.replace(tzinfo=UTC)


def test_daily_fires_every_midnight() -> None:
    times = fire_times("@daily", dt.datetime(2026, 2, 27, 12, tzinfo=UTC), 3)
    assert [t.isoformat() for t in times] == [
        "2026-02-28T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
        "2026-03-02T00:00:00+00:00",
    ]


def test_sunday_is_0_and_7_and_names_work() -> None:
    assert parse_cron("0 0 * * 0") == parse_cron("0 0 * * 7") == parse_cron("0 0 * * sun")
    assert parse_cron("0 0 * * 1-5") == parse_cron("0 0 * * mon-fri")
    assert parse_cron("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert parse_cron("0 0 1 jan-mar *").months == {1, 2, 3}


def test_weekdays_count_from_sunday() -> None:
    friday = dt.datetime(2026, 11, 27, 3, 0, tzinfo=UTC)  # after Friday's 02:30
    nxt = trigger_for("30 2 * * 1-5").get_next_fire_time(None, friday)
    assert nxt == dt.datetime(2026, 11, 30, 2, 30, tzinfo=UTC)  # Monday, not Saturday


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("@reboot", "unknown macro @reboot"),
        ("0 3 * *", "expected 5 fields"),
        ("61 * * * *", "minute field '61': 61 is outside 0-59"),
        ("0 24 * * *", "hour field '24': 24 is outside 0-23"),
        ("0 0 0 * *", "day-of-month field '0'"),
        ("0 0 * * 8", "day-of-week field '8'"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step '0' is not a number above 0"),
        ("0 0 * * someday", "'someday' is not a number or name"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_bad_expressions_say_why(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cron(expression)


def test_feb_30_with_a_weekday_fires_on_the_weekday() -> None:
    """Both restricted: the impossible day does not stop the weekday from firing."""
    nxt = trigger_for("0 0 30 2 1").get_next_fire_time(None, dt.datetime(2026, 11, 27, tzinfo=UTC))
    assert nxt == dt.datetime(2027, 2, 1, tzinfo=UTC)  # Feb's first Monday


def test_timezone_shifts_the_schedule() -> None:
    summer = dt.datetime(2026, 7, 1, tzinfo=UTC)
    due = trigger_for("0 3 * * *", timezone="Europe/Berlin").get_next_fire_time(None, summer)
    assert due is not None
    assert due.astimezone(UTC) == dt.datetime(2026, 7, 1, 1, 0, tzinfo=UTC)
    winter = dt.datetime(2026, 12, 1, tzinfo=UTC)
    due = trigger_for("0 3 * * *", timezone="Europe/Berlin").get_next_fire_time(None, winter)
    assert due is not None
    assert due.astimezone(UTC) == dt.datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def test_dst_gap_fires_after_the_change_and_repeat_fires_once() -> None:
    # 2027-03-28 02:00 CET -> 03:00 CEST: 02:30 does not exist that day
    times = fire_times("30 2 * * *", dt.datetime(2027, 3, 27, 12, tzinfo=UTC), 2, "Europe/Berlin")
    assert [t.astimezone(UTC).isoformat() for t in times] == [
        "2027-03-28T01:30:00+00:00",  # 03:30 CEST, one hour late, not skipped
        "2027-03-29T00:30:00+00:00",
    ]
    # 2027-10-31 03:00 CEST -> 02:00 CET: 02:30 happens twice, fires once
    times = fire_times("30 2 * * *", dt.datetime(2027, 10, 30, 12, tzinfo=UTC), 2, "Europe/Berlin")
    assert [t.astimezone(UTC).isoformat() for t in times] == [
        "2027-10-31T00:30:00+00:00",
        "2027-11-01T01:30:00+00:00",
    ]


def test_unknown_timezone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        trigger_for("@daily", timezone="Mars/Olympus")


def test_jitter_stays_within_its_bound() -> None:
    start = dt.datetime(2026, 11, 27, 10, 17, tzinfo=UTC)
    on_time = dt.datetime(2026, 11, 28, tzinfo=UTC)
    for _ in range(20):
        due = trigger_for("@daily", jitter=30).get_next_fire_time(None, start)
        assert due is not None
        assert on_time <= due <= on_time + dt.timedelta(seconds=30)


def test_missed_run_in_the_schedule_zone() -> None:
    last = dt.datetime(2026, 7, 1, 0, 30, tzinfo=UTC).timestamp()  # 02:30 Berlin
    now = dt.datetime(2026, 7, 1, 1, 30, tzinfo=UTC).timestamp()  # 03:30 Berlin
    assert missed_run("0 3 * * *", last, now, "Europe/Berlin") is True
    assert missed_run("0 3 * * *", last, now) is False  # 03:00 UTC has not come yet
