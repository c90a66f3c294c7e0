"""The backup repository: an object store addressed by keys, on S3 or in a directory."""

from backupd.storage.base import ObjectInfo, ObjectStore
from backupd.storage.opener import open_store

__all__ = ["ObjectInfo", "ObjectStore", "open_store"]
