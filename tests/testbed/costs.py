"""What the archive costs in S3 requests and bytes, measured through the counting proxy.

Shared by tests/integration/test_costs.py (short windows, asserted) and
bench/repository_costs.py (long windows, the figures in docs/costs.md). A window is a stretch
of wall time, with or without a steady writer, over which the proxy's request counts and the
server's binlog growth are compared; the wait is the measurement, not a synchronisation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from tests.testbed.mariadb import MariaDB
from tests.testbed.proxy import DelayingProxy
from tests.testbed.writer import Writer

HOUR = 3600.0
MONTH_HOURS = 730.0


@dataclass(frozen=True)
class Window:
    seconds: float
    requests: dict[str, int]  # S3 operation -> requests in the window
    binlog_bytes: int  # server binlog bytes written in the window
    commits: int

    def per_hour(self) -> dict[str, float]:
        return {op: round(n * HOUR / self.seconds, 1) for op, n in sorted(self.requests.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "commits": self.commits,
            "binlog_bytes": self.binlog_bytes,
            "requests": dict(sorted(self.requests.items())),
            "requests_per_hour": self.per_hour(),
            "requests_per_month": {
                op: round(rate * MONTH_HOURS) for op, rate in self.per_hour().items()
            },
        }


def server_binlog_bytes(db: MariaDB) -> int:
    return sum(int(row[1]) for row in db.sql("SHOW BINARY LOGS"))


def measure(
    proxy: DelayingProxy, db: MariaDB, seconds: float, table: str = "", interval: float = 0.01
) -> Window:
    """Requests through `proxy` over `seconds`; with `table`, a writer commits every
    `interval` seconds meanwhile (steady writes), otherwise the server stays idle."""
    before, written = dict(proxy.requests), server_binlog_bytes(db)
    writer = Writer(db, table, interval=interval).start() if table else None
    threading.Event().wait(seconds)  # the measured interval itself
    commits = len(writer.stop()) if writer else 0
    after = dict(proxy.requests)
    requests = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    return Window(
        seconds,
        {op: n for op, n in requests.items() if n},
        server_binlog_bytes(db) - written,
        commits,
    )


def bucket_sizes(s3: Any, bucket: str, prefix: str) -> list[int]:
    """Sizes of the objects under `prefix` (read directly, not through the proxy)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [int(item["Size"]) for page in pages for item in page.get("Contents", [])]
