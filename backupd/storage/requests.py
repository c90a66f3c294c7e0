"""Repository requests by operation: what the backup costs in S3 requests, seen live.

S3 bills per request, so the count comes from the wire: an S3 client reports every HTTP
request it sends (retries and list pages included) under the S3 operation name (PutObject,
GetObject, ListObjectsV2, DeleteObject, HeadBucket). A file:// repository reports its calls
under the same names. Counts go to `backupd_repository_requests_total{op}` and to the
`storage.requests` of the status document.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from backupd.metrics import PREFIX

OnRequest = Callable[[str], None]
OPERATIONS = ("PutObject", "GetObject", "ListObjectsV2", "DeleteObject", "HeadBucket")


def ignore_request(_operation: str) -> None:
    """Default for stores opened outside the daemon (backupctl, restores)."""


class RequestCounts:
    """Thread-safe counts since the daemon started, mirrored into the metric."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._counts: Tally[str] = Tally()
        self._metric = Counter(
            f"{PREFIX}_repository_requests",
            "Requests sent to the backup repository by S3 operation (retries included)",
            ["op"],
            registry=registry,
        )
        for operation in OPERATIONS:
            self._metric.labels(operation)

    def add(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1
        self._metric.labels(operation).inc()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


def count_s3_requests(client: Any, on_request: OnRequest) -> None:
    """Call `on_request(operation)` for every HTTP request the boto3 S3 client sends."""

    def before_send(event_name: str, **_kwargs: Any) -> None:
        on_request(event_name.rpartition(".")[2])

    client.meta.events.register("before-send.s3", before_send)
