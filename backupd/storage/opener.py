"""Which store a repository URL means: file:// is a directory, anything else S3."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from backupd.config import StorageSection
from backupd.storage.base import ObjectStore
from backupd.storage.filestore import FileStore
from backupd.storage.requests import OnRequest, ignore_request


def open_store(section: StorageSection, on_request: OnRequest = ignore_request) -> ObjectStore:
    """The repository `section.url` names; `on_request(operation)` sees every request."""
    parsed = urlparse(section.url)
    if parsed.scheme == "file":
        return FileStore(unquote(parsed.path), url=section.url, on_request=on_request)
    from backupd.storage.s3store import S3Store  # boto3 is slow to import; only when needed

    return S3Store(section, on_request=on_request)
