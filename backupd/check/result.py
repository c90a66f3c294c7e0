"""One line of `backupctl check`: what was tested, how it went, and what to do about it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

OK = "OK"
WARN = "WARN"
FAIL = "FAIL"
_RANK = {OK: 0, WARN: 1, FAIL: 2}

# Nagios plugin exit codes (OK, WARNING, CRITICAL, UNKNOWN).
NAGIOS_OK = 0
NAGIOS_WARNING = 1
NAGIOS_CRITICAL = 2
NAGIOS_UNKNOWN = 3
_NAGIOS = {
    OK: (NAGIOS_OK, "OK"),
    WARN: (NAGIOS_WARNING, "WARNING"),
    FAIL: (NAGIOS_CRITICAL, "CRITICAL"),
}


@dataclass(frozen=True)
class Result:
    """`name` is `<area>.<what>` (`mysql.binlog_format`); `fix` is empty when nothing to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.detail}"
        return f"{text}\n     fix: {self.fix}" if self.fix and self.status != OK else text


def ok(name: str, detail: str) -> Result:
    return Result(name, OK, detail)


def warn(name: str, detail: str, fix: str) -> Result:
    return Result(name, WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Result:
    return Result(name, FAIL, detail, fix)


def overall(results: Sequence[Result]) -> str:
    return max((r.status for r in results), key=_RANK.__getitem__, default=OK)


def report(results: Sequence[Result]) -> dict[str, Any]:
    """The `--json` document (INTERFACE.md)."""
    status = overall(results)
    return {
        "ok": status != FAIL,
        "status": status,
        "counts": {s: sum(1 for r in results if r.status == s) for s in (OK, WARN, FAIL)},
        "checks": [r.to_dict() for r in results],
    }


def nagios(results: Sequence[Result]) -> tuple[int, str]:
    """One line for a Nagios/Icinga check and its exit code; the worst problems come first."""
    status = overall(results)
    code, word = _NAGIOS[status]
    problems = sorted((r for r in results if r.status != OK), key=lambda r: -_RANK[r.status])
    counts = report(results)["counts"]
    summary = f"{counts[FAIL]} failed, {counts[WARN]} warnings, {counts[OK]} ok"
    detail = "; ".join(f"{r.name}: {r.detail}" for r in problems)
    return code, f"BACKUPD CHECK {word} - {summary}" + (f" - {detail}" if detail else "")
