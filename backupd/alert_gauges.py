"""The config values the alert rules divide by, exported as gauges so the rules follow the config.

A snapshot-age alert that assumed the default 6-hour schedule lied for a daily one; a spool
alert at a fixed 512 MiB lied for a larger spool. The rules in
packaging/prometheus/backupd.rules.yml are ratios to these gauges instead. Each gauge is read
from the running config at scrape time, so a SIGHUP reload moves it. They are exported whether
or not the feature is enabled, as the alerts were before: a host whose snapshots or drills are
off is still told that it has none.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backupd.config import Config
from backupd.cron import trigger_for
from backupd.metrics import PREFIX

# Fire times looked at: all of the next 35 days (every weekday and day-of-month pattern
# repeats within them; a rarer schedule still shows one gap), at most MAX_FIRES of them.
HORIZON = dt.timedelta(days=35)
MAX_FIRES = 3_000  # ~0.5 s at worst, once per schedule (cached)


@functools.lru_cache(maxsize=16)
def expected_interval(cron: str, timezone: str = "UTC", now: float | None = None) -> float:
    """Longest gap in seconds between consecutive fire times of `cron` (in `timezone`) over
    the 35 days from `now`.

    For a regular schedule this is its period ("0 */6 * * *" -> 21600); for an uneven one
    (weekdays only, "1,15 of the month") the longest gap, so an alert waiting for a multiple
    of it never fires over a weekend. Cached: the gaps of a schedule do not change.
    """
    trigger = trigger_for(cron, timezone=timezone)
    start = dt.datetime.fromtimestamp(now, dt.UTC) if now is not None else dt.datetime.now(dt.UTC)
    fires: list[dt.datetime] = []
    previous = None
    for _ in range(MAX_FIRES):
        fire = trigger.get_next_fire_time(previous, previous or start)
        if fire is None:
            break
        fires.append(fire)
        if fire - start > HORIZON and len(fires) > 1:
            break
        previous = fire + dt.timedelta(seconds=1)
    # timestamps, not b - a: aware datetimes sharing a tzinfo subtract as wall-clock times
    gaps = [b.timestamp() - a.timestamp() for a, b in itertools.pairwise(fires)]
    return max(gaps, default=0.0)


class AlertGauges(Collector):
    """`backupd_snapshot_expected_interval_seconds`, `backupd_binlog_spool_max_bytes`,
    `backupd_drill_expected_interval_seconds`, from the config `current()` returns."""

    def __init__(self, current: Callable[[], Config]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        config = self._current()
        yield _gauge(
            "snapshot_expected_interval_seconds",
            "Longest gap between scheduled snapshot runs (snapshot.schedule) plus jitter",
            expected_interval(config.snapshot.schedule, config.snapshot.timezone)
            + config.snapshot.jitter_seconds,
        )
        yield _gauge(
            "binlog_spool_max_bytes",
            "binlog.spool_max_bytes: at this spool size archiving pauses",
            config.binlog.spool_max_bytes,
        )
        yield _gauge(
            "drill_expected_interval_seconds",
            "Longest gap between scheduled restore drills (drill.schedule)",
            expected_interval(config.drill.schedule, config.drill.timezone),
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)
