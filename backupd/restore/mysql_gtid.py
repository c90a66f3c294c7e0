"""MySQL GTID sets ("uuid:1-100:105,uuid2:1-7") as far as restore planning needs them: is a
transaction in a set, and how far does a set reach for one server uuid.

MariaDB positions (domain-server-seq, one per domain) live in restore/plan.py; a MySQL set is
a different thing — intervals per source uuid — and is never compared as text.
"""

from __future__ import annotations

import re

_INTERVAL = re.compile(r"^(\d+)(?:-(\d+))?$")


def intervals(text: str) -> dict[str, list[tuple[int, int]]]:
    """uuid (lowercase; with ":tag" for MySQL 8.3 tagged GTIDs) -> closed intervals."""
    found: dict[str, list[tuple[int, int]]] = {}
    for member in text.replace("\\n", "").replace("\n", "").split(","):
        parts = [p.strip().lower() for p in member.split(":")]
        if len(parts) < 2 or not parts[0]:
            continue
        key = parts[0]
        for part in parts[1:]:
            match = _INTERVAL.match(part)
            if match is None:  # a tag: the intervals after it belong to uuid:tag
                key = f"{parts[0]}:{part}"
                continue
            low = int(match.group(1))
            found.setdefault(key, []).append((low, int(match.group(2) or low)))
    return found


def contains(text: str, uuid: str, gno: int) -> bool:
    return any(low <= gno <= high for low, high in intervals(text).get(uuid.lower(), []))


def reach(text: str, uuid: str) -> int:
    """The highest transaction number of `uuid` in the set (0: none)."""
    return max((high for _low, high in intervals(text).get(uuid.lower(), [])), default=0)
