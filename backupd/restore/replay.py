"""Replay archived binlogs into a running server: one `mariadb-binlog | mariadb` session.

All files go through ONE client session, so temporary tables and session variables carry
across file boundaries (one `mysql` per file breaks them). A plan that crosses timelines
replays several ranges: one binlog tool run per range, all into that one session. The
stream passes through this process only to count progress from the `# at N` markers the
binlog tool prints.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from backupd.errors import BackupdError

_MARKER = b"\n# at "
CHUNK = 1024 * 1024


class ReplayFailed(BackupdError):
    """Replay failed: {message}"""

    code = "replay_failed"


@dataclass(frozen=True)
class ReplayServer:
    """Where to replay: a socket, or host/port; credentials from an optional option file."""

    socket: str = ""
    host: str = ""
    port: int = 0  # no default: 3306 is usually the production server
    user: str = ""
    option_file: str = ""

    def client_args(self) -> list[str]:
        args = [f"--defaults-extra-file={self.option_file}"] if self.option_file else []
        if self.socket:
            args.append(f"--socket={self.socket}")
        elif not self.port:
            raise ReplayFailed("no target: give its socket, or its host and port")
        else:
            args += [f"--host={self.host or '127.0.0.1'}", f"--port={self.port}", "--protocol=TCP"]
        if self.user:
            args.append(f"--user={self.user}")
        return args


@dataclass(frozen=True)
class ReplayRange:
    """Local binlog files in order; start in the first, stop (exclusive end) in the last."""

    files: Sequence[Path]
    start_position: int
    stop_position: int | None = None  # None: to the end of the last file

    def total_bytes(self) -> int:
        sizes = [path.stat().st_size for path in self.files]
        if self.stop_position is not None:
            sizes[-1] = self.stop_position
        return max(0, sum(sizes) - self.start_position)


@dataclass
class Progress:
    total_bytes: int
    started: float
    events: int = 0
    done_bytes: int = 0
    file_index: int = 0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done_bytes / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        return (self.total_bytes - self.done_bytes) / rate if rate > 0 else None


def binlog_tool_args(replay_range: ReplayRange) -> list[str]:
    args = [f"--start-position={replay_range.start_position}"]
    if replay_range.stop_position is not None:
        args.append(f"--stop-position={replay_range.stop_position}")
    return args + [str(path) for path in replay_range.files]


class _ProgressCounter:
    """Track position across files from the `# at N` markers and `Rotate to` lines.

    Counting with bytes.count/rfind keeps this process from being the replay's bottleneck.
    """

    def __init__(self, replay_range: ReplayRange, progress: Progress, base: int = 0) -> None:
        self._sizes = [path.stat().st_size for path in replay_range.files]
        self._start = replay_range.start_position
        self._progress = progress
        self._base = base  # bytes of the ranges replayed before this one
        self._tail = b""
        progress.file_index = 0

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        if not cut:
            return
        progress = self._progress
        progress.events += data.count(_MARKER, 0, cut) + data.startswith(_MARKER[1:])
        rotations = data.count(b"\tRotate to ", 0, cut)
        progress.file_index = min(progress.file_index + rotations, len(self._sizes) - 1)
        last = data.rfind(_MARKER, 0, cut)
        if last >= 0:
            line_end = data.index(b"\n", last + 1)
            position = int(data[last + len(_MARKER) : line_end])
            done_files = sum(self._sizes[: progress.file_index])
            progress.done_bytes = self._base + max(0, done_files + position - self._start)


def replay(
    replay_range: ReplayRange | Sequence[ReplayRange],
    server: ReplayServer,
    binlog_tool: str = "mariadb-binlog",
    client: str = "mariadb",
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 1.0,
) -> Progress:
    """Run the replay; raise ReplayFailed with the tools' own error text on any failure."""
    for tool in (binlog_tool, client):
        if shutil.which(tool) is None:
            raise ReplayFailed(f"{tool} not found on PATH (install the MariaDB/MySQL client)")
    ranges = [replay_range] if isinstance(replay_range, ReplayRange) else list(replay_range)
    progress = Progress(sum(r.total_bytes() for r in ranges), time.monotonic())
    sink = subprocess.Popen(
        [client, *server.client_args(), "--binary-mode", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    errors = {"source": b"", "sink": b""}
    sink_reader = threading.Thread(target=_drain, args=(sink.stderr, errors, "sink"), daemon=True)
    sink_reader.start()
    assert sink.stdin is not None
    reporter = _Reporter(progress, on_progress, progress_interval)
    source_code, base = 0, 0
    try:
        for each in ranges:
            source_code = _pipe_range(
                each, binlog_tool, sink.stdin, progress, base, reporter, errors
            )
            base += each.total_bytes()
            if source_code != 0:
                break
    except BrokenPipeError:
        pass  # the client died; its exit code and stderr say why
    finally:
        _close_quietly(sink.stdin)
        sink_code = sink.wait()
        sink_reader.join(10)
    if source_code != 0:
        raise ReplayFailed(f"{binlog_tool} exited {source_code}: {_tail(errors['source'])}")
    if sink_code != 0:
        raise ReplayFailed(f"{client} exited {sink_code}: {_tail(errors['sink'])}")
    progress.done_bytes = progress.total_bytes
    if on_progress:
        on_progress(progress)
    return progress


class _Reporter:
    """Calls `on_progress` at most every `interval` seconds."""

    def __init__(
        self, progress: Progress, on_progress: Callable[[Progress], None] | None, interval: float
    ) -> None:
        self.progress, self.on_progress, self.interval = progress, on_progress, interval
        self.last = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if self.on_progress and now - self.last >= self.interval:
            self.on_progress(self.progress)
            self.last = now


def _pipe_range(
    replay_range: ReplayRange,
    binlog_tool: str,
    sink: IO[bytes],
    progress: Progress,
    base: int,
    reporter: _Reporter,
    errors: dict[str, bytes],
) -> int:
    """Run the binlog tool over one range into the client's stdin; its exit code. A broken
    pipe (the client died) ends the tool at once: it never blocks on a pipe nobody reads."""
    counter = _ProgressCounter(replay_range, progress, base)
    source = subprocess.Popen(
        [binlog_tool, *binlog_tool_args(replay_range)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader = threading.Thread(target=_drain, args=(source.stderr, errors, "source"), daemon=True)
    reader.start()
    assert source.stdout is not None
    try:
        while chunk := os.read(source.stdout.fileno(), CHUNK):
            counter.feed(chunk)
            sink.write(chunk)
            reporter.tick()
    except BrokenPipeError:
        source.kill()
        raise
    finally:
        source.stdout.close()
        code = source.wait()
        reader.join(10)
    return code


def _drain(stream: IO[bytes] | None, errors: dict[str, bytes], key: str) -> None:
    if stream is not None:
        errors[key] = stream.read()[-4000:]


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(BrokenPipeError):
        stream.close()


def _tail(raw: bytes) -> str:
    text = raw.decode(errors="replace").strip()
    return text.splitlines()[-1] if text else "(no error output)"
