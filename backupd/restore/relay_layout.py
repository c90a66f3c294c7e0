"""Relay logs from rebuilt binlog files: what their events carry, and laying them out.

Files are hard-linked into the target's relay log directory when it is on the same
filesystem, copied otherwise; the last one is always a copy cut at the end point, so the
relay logs hold nothing past it (a crash mid-replay can never apply more). The scan reads
only event headers: the server ids the applier must not share, and the event count.
"""

from __future__ import annotations

import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.restore.replay import ReplayFailed, ReplayRange


@dataclass(frozen=True)
class RangeEvents:
    """What the events of a range tell before it is applied."""

    server_ids: frozenset[int]
    events: int


def scan(replay_range: ReplayRange) -> RangeEvents:
    """Server ids of every event up to the end point, and how many events are replayed."""
    ids: set[int] = set()
    count = 0
    last = len(replay_range.files) - 1
    for number, path in enumerate(replay_range.files):
        first = replay_range.start_position if number == 0 else 0
        stop = replay_range.stop_position if number == last else None
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= 4:
                continue
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                end = size if stop is None else min(stop, size)
                offset = 4
                while offset + 19 <= end:
                    ids.add(int.from_bytes(data[offset + 5 : offset + 9], "little"))
                    length = int.from_bytes(data[offset + 9 : offset + 13], "little")
                    if length < 19:
                        break
                    count += offset >= first
                    offset += length
    return RangeEvents(frozenset(ids), count)


def free_server_id(current: int, taken: frozenset[int]) -> int:
    """`current` when no event carries it, else the lowest id above every one that does."""
    if current not in taken:
        return current
    candidate = max(taken) + 1
    return candidate if candidate < 2**32 else min(set(range(1, len(taken) + 2)) - taken)


@dataclass(frozen=True)
class RelayFiles:
    """Our relay logs in the target's relay directory, in replay order."""

    directory: Path
    base: str  # e.g. mariadbd-relay-bin-backupd_replay
    entry_prefix: str  # written before each name in the index ("./" or a directory)
    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def index(self) -> Path:
        return self.directory / f"{self.base}.index"

    def number(self, name: str) -> int:
        stem, _, digits = name.rpartition(".")
        return int(digits) if stem == self.base and digits.isdigit() else -1


def relay_name(base: str, number: int) -> str:
    return f"{base}.{number:06d}"


def lay_out(replay_range: ReplayRange, directory: Path, base: str, owner: os.stat_result) -> (
    tuple[tuple[str, ...], tuple[int, ...]]
):  # fmt: skip
    """Link (or copy) each file in as a relay log; the last is cut at the end point."""
    _check_space(replay_range, directory)
    names, sizes = [], []
    last = len(replay_range.files) - 1
    for number, source in enumerate(replay_range.files):
        name = relay_name(base, number + 1)
        target = directory / name
        stop = replay_range.stop_position if number == last else None
        if stop is None or stop >= source.stat().st_size:
            _link_or_copy(source, target)
        else:
            with open(source, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(_Limited(src, stop), dst, 1024 * 1024)
        own(target, owner)
        names.append(name)
        sizes.append(target.stat().st_size)
    return tuple(names), tuple(sizes)


class _Limited:
    """A reader that stops after `limit` bytes."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream, self.left = stream, limit

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        chunk: bytes = self.stream.read(size)
        self.left -= len(chunk)
        return chunk


def _check_space(replay_range: ReplayRange, directory: Path) -> None:
    """Copies (other filesystem, or the cut last file) must fit, with 5 % to spare."""
    device = directory.stat().st_dev
    needed = sum(p.stat().st_size for p in replay_range.files if p.stat().st_dev != device)
    needed += replay_range.stop_position or 0
    free = shutil.disk_usage(directory).free
    if needed * 1.05 > free:
        raise ReplayFailed(
            f"the relay logs need {needed} bytes in {directory}, which has {free} free; "
            "free space there or use --method pipe"
        )


def own(path: Path, owner: os.stat_result) -> None:
    """Give the file to the data directory's owner (the server's user) when we can."""
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem: copy
        shutil.copyfile(source, target)
