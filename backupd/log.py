"""Structured logs on stdout: one event per line, logfmt or JSON, journald priority prefixes.

Under systemd (JOURNAL_STREAM set) each line starts with `<N>` so journald files it at the
right priority. Keys that look like secrets are masked before rendering.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential")


def mask_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event:
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


class _PriorityPrefix:
    """Prefix the rendered line with journald's `<N>` priority."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        priority = _PRIORITY.get(str(event.get("level", method)), 6)
        return f"<{priority}>{self._renderer(logger, method, event)}"


def configure_logging(
    log_format: str = "logfmt",
    level: str = "info",
    stream: TextIO | None = None,
    journald: bool | None = None,
) -> None:
    """Set up structlog once per process (and again on SIGHUP when the level changes)."""
    if journald is None:
        journald = bool(os.environ.get("JOURNAL_STREAM"))
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format == "json"
        else structlog.processors.LogfmtRenderer(
            key_order=["ts", "level", "event"], drop_missing=True
        )
    )
    if journald:
        renderer = _PriorityPrefix(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            mask_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(component=name)
