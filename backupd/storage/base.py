"""The object-store interface every repository backend implements, and the factory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlparse

from backupd.config import StorageSection
from backupd.storage.requests import OnRequest, ignore_request


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


def open_store(section: StorageSection, on_request: OnRequest = ignore_request) -> ObjectStore:
    """The repository `section.url` names; `on_request(operation)` sees every request."""
    parsed = urlparse(section.url)
    if parsed.scheme == "file":
        from backupd.storage.filestore import FileStore

        return FileStore(unquote(parsed.path), url=section.url, on_request=on_request)
    from backupd.storage.s3store import S3Store

    return S3Store(section, on_request=on_request)
