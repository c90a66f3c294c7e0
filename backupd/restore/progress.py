"""Progress of a long restore step on a terminal: bytes, rate and ETA, once a second.

Fetch, plan, verify and replay can take minutes; an operator at a terminal should see that
they move and when they end. Shown only when asked for (stderr is a terminal and no
`--json`), so scripts, pipes and logs get nothing extra. One line rewritten in place,
ended with a newline when the step finishes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO


class Measured(Protocol):
    """What a progress line shows (a Meter, or the replay's own Progress)."""

    total_bytes: int
    done_bytes: int

    @property
    def rate(self) -> float: ...

    @property
    def eta_seconds(self) -> float | None: ...


@dataclass
class Meter:
    """Bytes done of a known total since `started`; thread-safe `add` for worker pools."""

    what: str
    total_bytes: int
    done_bytes: int = 0
    count: int = 0  # items (objects, files) done
    unit: str = "objects"
    finished: bool = False  # the last report of this step
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, size: int, items: int = 1) -> None:
        with self._lock:
            self.done_bytes += size
            self.count += items

    @property
    def rate(self) -> float:
        return rate_since(self.started, self.done_bytes)

    @property
    def eta_seconds(self) -> float | None:
        return eta(self.total_bytes - self.done_bytes, self.rate)


def rate_since(started: float, done: int) -> float:
    """Bytes a second since `started` (monotonic)."""
    elapsed = time.monotonic() - started
    return done / elapsed if elapsed > 0 else 0.0


def eta(left: int, rate: float) -> float | None:
    """Seconds to go at `rate`; None until something moved."""
    return max(0, left) / rate if rate > 0 else None


def progress_line(what: str, measured: Measured, extra: str = "") -> str:
    """`fetch: 12.0/80.0 MB, 3.1 MB/s, ETA 22s` (ETA `?` until something moved)."""
    eta = measured.eta_seconds
    return (
        f"{what}: {extra}{measured.done_bytes / 1e6:.1f}/{measured.total_bytes / 1e6:.1f} MB, "
        f"{measured.rate / 1e6:.1f} MB/s, ETA {'?' if eta is None else f'{eta:.0f}s'}"
    )


def wanted(json_output: bool, stream: TextIO | None = None) -> bool:
    """Progress only for a person: a terminal on stderr and no `--json`."""
    stream = stream if stream is not None else sys.stderr
    return not json_output and stream.isatty()


class Terminal:
    """Rewrites one line on `stream` at most every `interval` seconds; `finish` ends it."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._open = False

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.finish()  # also on an error: its message starts on a line of its own

    def show(self, line: str, force: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self._interval:
                return
            self._last = now
            self._open = True
            print(f"\r{line}   ", end="", file=self._stream, flush=True)

    def follow(self, what: str) -> Callable[[Meter], None]:
        """A Meter callback: `what: N objects, done/total MB, rate, ETA`, ended when finished."""

        def show(meter: Meter) -> None:
            line = progress_line(what, meter, f"{meter.count} {meter.unit}, ")
            if meter.finished:
                self.finish(line)
            else:
                self.show(line)

        return show

    def finish(self, line: str | None = None) -> None:
        """Print the final state (when given) and end the line."""
        if line is not None:
            self.show(line, force=True)
        with self._lock:
            if self.enabled and self._open:
                print(file=self._stream, flush=True)
            self._open = False
