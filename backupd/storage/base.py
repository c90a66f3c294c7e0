"""The object-store interface every repository backend implements, and the factory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(Protocol):
    """Keys are `/`-separated relative names; the store adds its own prefix."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Store `data` durably under `key` (whole object or nothing)."""

    def get(self, key: str) -> bytes:
        """Return the object; raise StorageError (code not_found) when absent."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in key order."""

    def delete(self, key: str) -> None:
        """Remove `key`; absent is success."""

    def check(self) -> None:
        """Raise StorageError when the repository cannot be reached or written."""
