"""The replication connection: COM_BINLOG_DUMP over pymysql, raw events out.

pymysql does the handshake and the session settings; after the dump command the socket is
read directly with a private buffer, so the reader knows whether more bytes are waiting
and can wait with a timeout (to cut segments on time) instead of blocking inside pymysql.
The archiver parses most events in place from that buffer (`buffered`/`consumed`, with
Segmenter.feed_packets) and takes the rest one at a time with `next_event`.
"""

from __future__ import annotations

import contextlib
import select
import struct
from typing import Any

import pymysql

from backupd import database
from backupd.binlog.events import CHECKSUM_CRC32, CHECKSUM_OFF
from backupd.config import MysqlSection
from backupd.errors import DatabaseUnavailable

COM_BINLOG_DUMP = 0x12
BINLOG_SEND_ANNOTATE_ROWS_EVENT = 0x2
MARIA_SLAVE_CAPABILITY_GTID = 4
_MAX_PACKET = 0xFFFFFF
_RECV_BYTES = 1 << 20
_BODY_TIMEOUT = 60.0  # a packet whose header arrived must not take longer than this


class StreamEnded(Exception):
    """The server ended the dump (EOF packet) or closed the connection."""


class ServerError(Exception):
    """The server refused the dump (an error packet), e.g. 1236 for a purged file."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(f"{message} (error {errno})")
        self.errno = errno
        self.message = message


class BinlogStream:
    """One dump connection; `next_event(timeout)` returns raw event bytes or None."""

    def __init__(self, conn: pymysql.connections.Connection[Any]) -> None:
        self._conn = conn
        self._sock: Any = conn._sock  # type: ignore[attr-defined]
        self._data = b""  # received, not yet parsed from `_offset` on
        self._offset = 0
        self._seq = 1
        # What the server's events carry before the first format description says it (the
        # artificial ROTATE): the checksum this connection declared with the server's own.
        self.checksum_alg = CHECKSUM_CRC32

    @classmethod
    def connect(cls, section: MysqlSection) -> BinlogStream:
        """A replication connection announcing checksum and GTID support, before the dump
        (so the caller can ask `binary_logs` on it first)."""
        conn = database.connect(section, read_timeout=None)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
                cursor.execute(f"SET @mariadb_slave_capability = {MARIA_SLAVE_CAPABILITY_GTID}")
                cursor.execute("SELECT @master_binlog_checksum")
                row = cursor.fetchone()
        except (pymysql.err.MySQLError, OSError) as exc:
            conn.close()
            raise DatabaseUnavailable(message=database.describe(exc)) from exc
        stream = cls(conn)
        declared = row[0].decode() if row and isinstance(row[0], bytes) else str(row and row[0])
        stream.checksum_alg = CHECKSUM_OFF if declared.upper() == "NONE" else CHECKSUM_CRC32
        return stream

    def binary_logs(self) -> list[tuple[str, int]]:
        """SHOW BINARY LOGS as (file, size), on this connection (before `dump`)."""
        try:
            with self._conn.cursor() as cursor:
                cursor.execute("SHOW BINARY LOGS")
                return [(str(row[0]), int(row[1])) for row in cursor.fetchall()]
        except (pymysql.err.MySQLError, OSError) as exc:
            raise DatabaseUnavailable(message=database.describe(exc)) from exc

    def dump(self, server_id: int, file: str, position: int, heartbeat_seconds: float) -> None:
        """COM_BINLOG_DUMP from `file`:`position`; events follow (`buffered`, `next_event`)."""
        payload = (
            struct.pack("<IHI", position, BINLOG_SEND_ANNOTATE_ROWS_EVENT, server_id)
            + file.encode()
        )
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(f"SET @master_heartbeat_period = {int(heartbeat_seconds * 1e9)}")
            self._conn._execute_command(COM_BINLOG_DUMP, payload)  # type: ignore[attr-defined]
        except (pymysql.err.MySQLError, OSError) as exc:
            raise DatabaseUnavailable(message=database.describe(exc)) from exc
        self._sock = self._conn._sock  # type: ignore[attr-defined]
        self._sock.settimeout(_BODY_TIMEOUT)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead socket cannot fail usefully
            self._conn._force_close()  # type: ignore[attr-defined]

    def buffered(self) -> tuple[bytes, int, int]:
        """(buffer, offset, expected sequence number) of what is received and not yet
        parsed: for a consumer that parses packets in place (Segmenter.feed_packets)."""
        return self._data, self._offset, self._seq

    def consumed(self, offset: int, seq: int) -> None:
        """The consumer of `buffered` parsed the packets up to `offset`."""
        self._offset, self._seq = offset, seq

    def next_event(self, timeout: float) -> bytes | None:
        """The next event, or None when nothing arrived within `timeout` seconds."""
        payload = self._packet(timeout)
        if payload is None:
            return None
        first = payload[0]
        if first == 0x00:
            return payload[1:]
        if first == 0xFE and len(payload) < 9:
            raise StreamEnded("the server ended the binlog dump")
        if first == 0xFF:
            errno = struct.unpack_from("<H", payload, 1)[0]
            text = payload[3:]
            if text[:1] == b"#":
                text = text[6:]
            raise ServerError(errno, text.decode("utf-8", "replace"))
        raise StreamEnded(f"unexpected packet 0x{first:02x} in the binlog stream")

    def _packet(self, timeout: float) -> bytes | None:
        parts: list[bytes] = []
        while True:
            if not self._need(4, timeout if not parts else None):
                return None
            header = self._take(4)
            length = header[0] | header[1] << 8 | header[2] << 16
            if header[3] != self._seq:
                raise StreamEnded(f"packet sequence {header[3]}, expected {self._seq}")
            self._seq = (self._seq + 1) & 0xFF
            self._need(length, None)
            parts.append(self._take(length))
            if length < _MAX_PACKET:
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def _tls_pending(self) -> bool:
        """TLS may hold decrypted bytes that select() cannot see."""
        pending = getattr(self._sock, "pending", None)
        return bool(pending and pending())

    def _take(self, size: int) -> bytes:
        piece = self._data[self._offset : self._offset + size]
        self._offset += size
        return piece

    def _need(self, size: int, timeout: float | None) -> bool:
        """Make `size` bytes available; False when `timeout` passed with none arriving.

        Received chunks are joined once per call, so a large event costs one copy.
        """
        have = len(self._data) - self._offset
        if have >= size:
            return True
        parts = [self._data[self._offset :]]
        while have < size:
            if timeout is not None and not self._tls_pending():
                ready, _, _ = select.select([self._sock], [], [], timeout)
                if not ready:
                    self._data, self._offset = b"".join(parts), 0
                    return False
                timeout = None
            try:
                chunk = self._sock.recv(max(size - have, _RECV_BYTES))
            except OSError as exc:
                raise StreamEnded(f"connection lost: {exc}") from exc
            if not chunk:
                raise StreamEnded("the server closed the connection")
            parts.append(chunk)
            have += len(chunk)
        self._data, self._offset = b"".join(parts), 0
        return True
