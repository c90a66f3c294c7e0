"""The providers' choices inside the lock budget: which instance covers the volumes without
IMDS, that the per-volume fallback makes its calls at once (the stall is one call, not N),
which EC2 failures are retried, and a local copy that stops at the deadline."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from backupd.config import EbsSection
from backupd.errors import ProviderError
from backupd.snapshot.providers.base import Target
from backupd.snapshot.providers.ebs import (
    EbsProvider,
    attached_instance,
    locked_config,
    transient,
)
from backupd.snapshot.providers.local import copy_extent, copy_range


def volume(volume_id: str, *attachments: tuple[str, str]) -> dict[str, Any]:
    return {
        "VolumeId": volume_id,
        "Attachments": [{"InstanceId": i, "State": state} for i, state in attachments],
    }


@pytest.mark.parametrize(
    ("volumes", "expected"),
    [
        ([volume("vol-1", ("i-a", "attached")), volume("vol-2", ("i-a", "attached"))], "i-a"),
        ([volume("vol-1", ("i-a", "attached")), volume("vol-2", ("i-b", "attached"))], ""),
        ([volume("vol-1", ("i-a", "attached")), volume("vol-2")], ""),
        ([volume("vol-1", ("i-a", "detaching"))], ""),
        ([volume("vol-1", ("i-a", "attached"), ("i-b", "attached"))], ""),  # multi-attach
        ([], ""),
    ],
)
def test_attached_instance(volumes: list[dict[str, Any]], expected: str) -> None:
    assert attached_instance(volumes) == expected


def test_calls_made_while_locked_are_not_retried_and_time_out_inside_the_budget() -> None:
    # botocore's Config sets its options as instance attributes the stubs do not declare.
    options = vars(locked_config(3.0))
    assert options["connect_timeout"] == 3.0 and options["read_timeout"] == 3.0
    assert options["retries"] == {"total_max_attempts": 1, "mode": "standard"}


def client_error(code: str, status: int) -> ClientError:
    body = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(body, "CreateSnapshots")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (client_error("RequestLimitExceeded", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("InvalidVolume.NotFound", 400), False),
        (client_error("UnauthorizedOperation", 403), False),
    ],
)
def test_which_ec2_failures_are_retried_with_a_fresh_lock(exc: Exception, expected: bool) -> None:
    assert transient(exc) is expected


class SplitClient:
    """Two volumes on two instances: per-volume CreateSnapshot; each call waits for the other,
    so a serial provider would time out here."""

    def __init__(self) -> None:
        self.both_in_flight = threading.Barrier(2, timeout=5)
        self.create_snapshots_calls = 0

    def describe_volumes(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "Volumes": [
                volume("vol-1", ("i-a", "attached")),
                volume("vol-2", ("i-b", "attached")),
            ]
        }

    def create_snapshots(self, **kwargs: Any) -> dict[str, Any]:
        self.create_snapshots_calls += 1
        return {"Snapshots": []}

    def create_snapshot(self, VolumeId: str, **kwargs: Any) -> dict[str, Any]:
        self.both_in_flight.wait()
        return {"SnapshotId": f"snap-{VolumeId}"}


def test_per_volume_snapshots_start_concurrently() -> None:
    client = SplitClient()
    section = EbsSection(volumes=["vol-1", "vol-2"], imds_url="http://127.0.0.1:9")
    provider = EbsProvider(section, "owner", client=client)
    targets = provider.prepare(["/a", "/b"])
    assert provider.instance_id == ""
    made = provider.start("set", targets, {}, deadline=0.0)
    assert [(v.volume, v.snapshot_id, v.method) for v in made] == [
        ("vol-1", "snap-vol-1", "create"),
        ("vol-2", "snap-vol-2", "create"),
    ]
    assert client.create_snapshots_calls == 0
    assert targets == [Target("/a", "vol-1"), Target("/b", "vol-2")]


def test_a_local_copy_stops_at_the_deadline(tmp_path: Path) -> None:
    source = tmp_path / "image"
    source.write_bytes(b"x" * 4096)
    src = os.open(source, os.O_RDONLY)
    dst = os.open(tmp_path / "copy", os.O_WRONLY | os.O_CREAT)
    try:
        assert copy_range(src, dst, 0, 4096, deadline=time.monotonic() + 60) == 4096
        with pytest.raises(ProviderError, match="lock deadline"):
            copy_range(src, dst, 0, 4096, deadline=time.monotonic() - 1)
        with pytest.raises(ProviderError, match="lock deadline"):
            copy_extent(src, dst, 0, 4096, deadline=time.monotonic() - 1)
    finally:
        os.close(src)
        os.close(dst)
