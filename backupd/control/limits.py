"""How much of the control socket each role may hold, so readers can never starve admins.

Every connection is counted against its peer's role (from SO_PEERCRED, known at accept time,
before a byte is read): admins (root, `admin_group`) have their own request slots, readers
(`socket_group`) theirs, and peers outside both groups share one slot that only ever earns
them a 403. A long-poll gives its request slot back while it waits and counts against a
separate, per-role number of parked waits instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from backupd.control.peer import Role

OTHER_SLOTS = 1  # peers outside both groups: enough to be told 403, never more
ROLE_NAMES = {Role.ADMIN: "admin", Role.READER: "reader", Role.NONE: "other"}


@dataclass(frozen=True)
class Limits:
    request_seconds: float = 5.0  # one deadline for a whole request: headers and body
    reader_slots: int = 16
    admin_slots: int = 8
    max_waits: int = 64  # parked long-polls per role


class RolePool:
    """Request slots and parked waits of one role; counters, so status can report them."""

    def __init__(self, slots: int, waits: int) -> None:
        self.slots = slots
        self.waits = waits
        self.busy = 0
        self.waiting = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take_slot(self) -> bool:
        with self._lock:
            if self.busy >= self.slots:
                self.refused += 1
                return False
            self.busy += 1
            return True

    def release_slot(self) -> None:
        with self._lock:
            self.busy -= 1

    def take_wait(self) -> bool:
        with self._lock:
            if self.waiting >= self.waits:
                return False
            self.waiting += 1
            return True

    def release_wait(self) -> None:
        with self._lock:
            self.waiting -= 1

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {
                "slots": self.slots,
                "busy": self.busy,
                "max_waits": self.waits,
                "waiting": self.waiting,
                "refused": self.refused,
            }


class RolePools:
    def __init__(self, limits: Limits) -> None:
        self._pools = {
            Role.ADMIN: RolePool(limits.admin_slots, limits.max_waits),
            Role.READER: RolePool(limits.reader_slots, limits.max_waits),
            Role.NONE: RolePool(OTHER_SLOTS, 0),
        }

    def of(self, role: Role) -> RolePool:
        return self._pools[role]

    def usage(self) -> dict[str, Any]:
        """The `control` section of the status document."""
        admin, reader = self.of(Role.ADMIN).usage(), self.of(Role.READER).usage()
        summary = (
            f"admin {admin['busy']}/{admin['slots']} busy, reader {reader['busy']}/"
            f"{reader['slots']} busy, {admin['waiting'] + reader['waiting']} waiting"
        )
        return {"summary": summary} | {
            name: self.of(role).usage() for role, name in ROLE_NAMES.items()
        }
