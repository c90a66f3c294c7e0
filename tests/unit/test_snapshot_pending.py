"""Following up EBS snapshots that take hours: the provider's wait loop against a scripted
DescribeSnapshots, and `snapshot --wait`'s progress line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from backupd.config import EbsSection
from backupd.errors import SnapshotErrored, SnapshotStillPending
from backupd.snapshot import ctl
from backupd.snapshot.catalog import VolumeSnapshot
from backupd.snapshot.providers.ebs import EbsProvider

VOLUMES = [
    VolumeSnapshot("/data", "vol-1", "snap-1", method="create-snapshots"),
    VolumeSnapshot("/logs", "vol-2", "snap-2", method="create-snapshots"),
]


class ScriptedEc2:
    """Answers DescribeSnapshots from a list of {snapshot id: (state, progress)} or errors."""

    def __init__(self, answers: list[dict[str, tuple[str, str]] | Exception]) -> None:
        self.answers: Iterator[dict[str, tuple[str, str]] | Exception] = iter(answers)
        self.calls = 0

    def describe_snapshots(self, SnapshotIds: list[str]) -> dict[str, Any]:
        self.calls += 1
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return {
            "Snapshots": [
                {"SnapshotId": i, "State": answer[i][0], "Progress": answer[i][1]}
                for i in SnapshotIds
                if i in answer
            ]
        }


def provider(answers: list[dict[str, tuple[str, str]] | Exception]) -> EbsProvider:
    return EbsProvider(EbsSection(poll_seconds=0.01), "host", client=ScriptedEc2(answers))


def throttled() -> ClientError:
    return ClientError({"Error": {"Code": "RequestLimitExceeded"}}, "DescribeSnapshots")


def test_completes_after_pending_and_reports_progress() -> None:
    both = {"snap-1": ("pending", "10%"), "snap-2": ("pending", "0%")}
    done = {"snap-1": ("completed", "100%"), "snap-2": ("completed", "100%")}
    seen: list[list[str]] = []
    result = provider([both, throttled(), done]).wait(
        "set", VOLUMES, 30, lambda vols: seen.append([v.progress for v in vols])
    )
    assert [v.state for v in result] == ["completed", "completed"]
    assert seen[0] == ["10%", "0%"] and seen[-1] == ["100%", "100%"]


def test_still_pending_at_the_timeout_keeps_the_latest_progress() -> None:
    answer = {"snap-1": ("pending", "42%"), "snap-2": ("completed", "100%")}
    with pytest.raises(SnapshotStillPending) as caught:
        provider([answer]).wait("set", VOLUMES, 0)
    assert [(v.state, v.progress) for v in caught.value.volumes] == [
        ("pending", "42%"),
        ("completed", "100%"),
    ]
    assert "vol-1 42%" in caught.value.message


def test_an_unreachable_endpoint_is_no_news_not_a_failure() -> None:
    with pytest.raises(SnapshotStillPending) as caught:
        provider([throttled()]).wait("set", VOLUMES, 0)
    assert "RequestLimitExceeded" in caught.value.message
    assert caught.value.volumes == VOLUMES


@pytest.mark.parametrize(
    "answer",
    [
        {"snap-1": ("error", "0%"), "snap-2": ("pending", "5%")},
        {"snap-2": ("pending", "5%")},  # snap-1 is gone
        ClientError({"Error": {"Code": "InvalidSnapshot.NotFound"}}, "DescribeSnapshots"),
    ],
)
def test_error_or_missing_snapshot_fails_the_set(
    answer: dict[str, tuple[str, str]] | Exception,
) -> None:
    with pytest.raises(SnapshotErrored):
        provider([answer]).wait("set", VOLUMES, 30)


class ScriptedControl:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = iter(answers)

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if method == "POST":
            return {"set_id": "S", "state": "running"}
        return next(self.answers)


def test_wait_on_a_terminal_shows_ec2_progress_per_volume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctl, "PENDING_POLL_SECONDS", 0.0)
    running = {
        "state": "running",
        "set_id": "S",
        "phase": "waiting",
        "volumes": [{"volume": "vol-1", "state": "pending", "progress": "42%"}],
    }
    pending = {
        "state": "pending",
        "set_id": "S",
        "volumes": [{"volume": "vol-1", "progress": "97%"}],
    }
    final = {"state": "completed", "set_id": "S"}
    client: Any = ScriptedControl([running, pending, final])
    assert ctl.wait_showing_progress(client, 60) == final
    err = capsys.readouterr().err
    assert "snapshot S: waiting — EC2 vol-1 42%" in err
    assert "snapshot S: pending — EC2 vol-1 97%" in err
