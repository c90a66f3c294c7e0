"""Where archiving stands and where it resumes: no gap, no duplicate.

`resume_point` is pure: from what the repository and the spool hold and what the server still
has (SHOW BINARY LOGS), it picks the exact (file, position) to stream from, or a gap when the
server purged what the archive still needs. `Progress` tracks the archived coordinate (the
end of the contiguous uploaded prefix) while uploads finish out of order.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backupd.binlog import layout
from backupd.binlog.events import MAGIC
from backupd.private import FILE_MODE, private_dir


@dataclass(frozen=True)
class Resume:
    file: str
    position: int
    gap: layout.GapKey | None = None
    inside_transaction: bool = False  # the archive ends in the middle of a transaction


def next_name(file: str) -> str:
    """mysql-bin.000041 -> mysql-bin.000042 (keeps the zero padding)."""
    base, _, number = file.rpartition(".")
    return f"{base}.{int(number) + 1:0{len(number)}d}"


def resume_point(
    stream: str, archived: Iterable[layout.SegmentKey], server_logs: list[tuple[str, int]]
) -> Resume:
    """Where to stream from, given what the timeline's `stream` holds (repository and spool)
    and the server's (file, size) list."""
    if not server_logs:
        raise ValueError("the server lists no binary logs (is log_bin on?)")
    names = [name for name, _ in server_logs]
    sizes = dict(server_logs)
    files = layout.group_by_file(archived)
    if not files:
        return Resume(names[0], len(MAGIC))
    last = max(files, key=layout.file_order)
    found = layout.chain(files[last])
    end = found.end if found is not None else 0
    kind = found.segments[-1].kind if found is not None and found.segments else ""
    closed = kind == "eof"
    later = [n for n in names if layout.file_order(n) > layout.file_order(last)]
    if closed:
        if not later:
            return Resume(last, end)
        expected = next_name(last)
        if later[0] == expected:
            return Resume(expected, len(MAGIC))
        return Resume(later[0], len(MAGIC), layout.GapKey(stream, expected, 0, later[0], 0))
    if last in sizes and end <= sizes[last]:
        return Resume(last, max(end, len(MAGIC)), inside_transaction=kind == "mid")
    target = later[0] if later else names[0]
    return Resume(target, len(MAGIC), layout.GapKey(stream, last, end, target, 0))


@dataclass
class _Item:
    file: str
    end: int
    last_time: int
    done: bool = False


class Progress:
    """The archived coordinate: advanced only over segments uploaded without a hole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[_Item] = deque()
        self._index: dict[tuple[str, int, int], _Item] = {}
        self.file = ""
        self.position = 0
        self.last_event_time = 0
        self.caught_up_at = 0.0
        self.passed: list[str] = []  # files the archived coordinate moved past (closed)

    def restore(self, file: str, position: int, last_time: int = 0) -> None:
        with self._lock:
            self.file, self.position = file, position
            self.last_event_time = max(self.last_event_time, last_time)

    def queued(self, file: str, start: int, end: int, last_time: int) -> None:
        """A segment entered the spool (in stream order)."""
        with self._lock:
            item = _Item(file, end, last_time)
            self._items.append(item)
            self._index[(file, start, end)] = item

    def uploaded(self, file: str, start: int, end: int) -> bool:
        """A segment is in the repository; True when the archived coordinate moved."""
        with self._lock:
            item = self._index.pop((file, start, end), None)
            if item is None:
                return False
            item.done = True
            moved = False
            while self._items and self._items[0].done:
                head = self._items.popleft()
                if self.file and head.file != self.file:
                    self.passed.append(self.file)
                self.file, self.position = head.file, head.end
                self.last_event_time = max(self.last_event_time, head.last_time)
                moved = True
            return moved

    def take_passed(self) -> list[str]:
        with self._lock:
            passed, self.passed = self.passed, []
            return passed

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._items)

    def coordinate(self) -> str:
        with self._lock:
            return f"{self.file}:{self.position}" if self.file else ""

    def recovery_point(self) -> float:
        """Everything committed up to this time is archived (event time or caught-up time)."""
        with self._lock:
            return max(float(self.last_event_time), self.caught_up_at)


class StateFile:
    """The last archived coordinate and its timeline's stream on local disk: at start the
    service checks that the repository still holds that much (BinlogService._cross_check)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, stream: str, file: str, position: int) -> None:
        """Replace the file atomically; uploads finish on several threads, hence the lock."""
        with self._lock:
            private_dir(self.path.parent)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            with open(fd, "w") as handle:
                handle.write(json.dumps({"stream": stream, "file": file, "position": position}))
            os.replace(tmp, self.path)
