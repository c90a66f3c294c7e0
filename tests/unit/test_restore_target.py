"""TARGET parsing: each form, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupd.errors import UsageError
from backupd.restore_target import (
    CoordinateTarget,
    GtidTarget,
    LatestTarget,
    TimeTarget,
    parse_target,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latest", LatestTarget()),
        ("LATEST", LatestTarget()),
        ("0-1-4242", GtidTarget("0-1-4242", domain=0, server_id=1, sequence=4242)),
        (
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:23",
            GtidTarget(
                "3E11FA47-71CA-11E1-9E33-C80AA9429562:23",
                uuid="3e11fa47-71ca-11e1-9e33-c80aa9429562",
                sequence=23,
            ),
        ),
        ("mysql-bin.000042:1234", CoordinateTarget("mysql-bin.000042", 1234)),
        ("2026-11-26T10:15:00Z", TimeTarget(datetime(2026, 11, 26, 10, 15, tzinfo=UTC))),
        ("2026-11-26T12:15:00+02:00", TimeTarget(datetime(2026, 11, 26, 10, 15, tzinfo=UTC))),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-26T10:15:00", "has no zone"),
        ("yesterday", "not a restore target"),
        ("mysql-bin.000001:2", "before the first event"),
        ("0-1", "not a restore target"),
    ],
)
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_target(text)


def test_round_trip_text() -> None:
    for text in ("latest", "0-1-5", "mysql-bin.000003:400", "2026-01-02T03:04:05Z"):
        assert str(parse_target(text)) == text
