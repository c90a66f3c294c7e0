"""The dump stream's packet reader against a socketpair standing in for the server."""

from __future__ import annotations

import socket
import struct
import threading
from types import SimpleNamespace

import pytest

from backupd.binlog.client import BinlogStream, ServerError, StreamEnded

MAX = 0xFFFFFF


def packets(payload: bytes, seq: int) -> tuple[bytes, int]:
    """Frame `payload` as MySQL packets (split at 16 MiB - 1), returning bytes and next seq."""
    out = bytearray()
    while True:
        chunk, payload = payload[:MAX], payload[MAX:]
        out += struct.pack("<I", len(chunk))[:3] + bytes([seq]) + chunk
        seq = (seq + 1) & 0xFF
        if len(chunk) < MAX:
            return bytes(out), seq


def stream_over(data: bytes) -> BinlogStream:
    ours, server = socket.socketpair()

    def send() -> None:
        server.sendall(data)
        server.close()

    threading.Thread(target=send, daemon=True).start()
    return BinlogStream(SimpleNamespace(_sock=ours))  # type: ignore[arg-type]


def test_small_and_huge_events_then_eof() -> None:
    huge = bytes(range(256)) * (70_000)  # 17.9 MB: two packets
    wire, seq = b"", 1
    events = [b"a" * 30, huge, b"b" * 5]
    for event in events:
        framed, seq = packets(b"\x00" + event, seq)
        wire += framed
    framed, seq = packets(b"\xfe\x00\x00\x02\x00", seq)
    wire += framed
    stream = stream_over(wire)
    got: list[bytes] = []
    with pytest.raises(StreamEnded, match="ended the binlog dump"):
        while True:
            arrived = stream.next_event(5.0)
            assert arrived is not None
            got.append(arrived)
    assert got == events


def test_error_packet_becomes_server_error() -> None:
    framed, _ = packets(b"\xff" + struct.pack("<H", 1236) + b"#HY000Could not find first log", 1)
    with pytest.raises(ServerError) as err:
        stream_over(framed).next_event(5.0)
    assert err.value.errno == 1236 and err.value.message == "Could not find first log"


def test_wrong_sequence_and_closed_connection_end_the_stream() -> None:
    framed, _ = packets(b"\x00abc", 7)
    with pytest.raises(StreamEnded, match="sequence"):
        stream_over(framed).next_event(5.0)
    half, _ = packets(b"\x00" + b"x" * 100, 1)
    with pytest.raises(StreamEnded, match="closed"):
        stream_over(half[:50]).next_event(5.0)


def test_nothing_within_the_timeout_is_none() -> None:
    ours, server = socket.socketpair()
    stream = BinlogStream(SimpleNamespace(_sock=ours))  # type: ignore[arg-type]
    assert stream.next_event(0.05) is None
    server.close()
