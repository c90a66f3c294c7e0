"""What the archiver reads from: one replication connection, as a protocol, so the reader's
resume-stream-cut loop can run in unit tests against an in-memory source.

The real part is `client.BinlogStream` (COM_BINLOG_DUMP over the MySQL protocol).
"""

from __future__ import annotations

from typing import Protocol


class BinlogSource(Protocol):
    checksum_alg: int  # the checksum the connection declared (events before the first FDE)

    def binary_logs(self) -> list[tuple[str, int]]:
        """The server's binary logs as (file, size), asked before `dump`."""

    def dump(self, server_id: int, file: str, position: int, heartbeat_seconds: float) -> None:
        """Start sending events from `file`:`position`."""

    def buffered(self) -> tuple[bytes, int, int]:
        """(received bytes, parse offset, expected packet sequence) for in-place parsing."""

    def consumed(self, offset: int, seq: int) -> None:
        """The caller parsed the buffered packets up to `offset`."""

    def next_event(self, timeout: float) -> bytes | None:
        """The next raw event, None after `timeout`; StreamEnded/ServerError when it ends."""

    def close(self) -> None: ...
