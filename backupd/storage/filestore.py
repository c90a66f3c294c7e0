"""A repository in a local directory (tests, or a mounted volume): atomic, fsynced writes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backupd.durable import write_file
from backupd.errors import ObjectMissing, StorageError
from backupd.private import private_dir
from backupd.storage.base import ObjectInfo
from backupd.storage.requests import OnRequest, ignore_request


class FileStore:
    def __init__(
        self, root: str | Path, url: str = "", on_request: OnRequest = ignore_request
    ) -> None:
        self.root = Path(root)
        self.url = url or f"file://{self.root}"
        self._on_request = on_request  # counted under S3's names, as an S3 store would

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or not key:
            raise StorageError(f"key escapes the repository: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        self._on_request("PutObject")
        path = self._path(key)
        try:
            private_dir(path.parent)
            write_file(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {key} under {self.root}: {exc}") from exc

    def get(self, key: str) -> bytes:
        self._on_request("GetObject")
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissing(key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key} under {self.root}: {exc}") from exc

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        """The object as a stream (see backupd/storage/streaming.py)."""
        self._on_request("GetObject")
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError as exc:
            raise ObjectMissing(key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key} under {self.root}: {exc}") from exc
        with handle:
            yield handle

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._on_request("ListObjectsV2")
        if not self.root.is_dir():
            return
        # walk only the directory the prefix names (a week of one-second segments is half a
        # million files): string keys, one stat each relative to its directory
        head = prefix.rpartition("/")[0]
        top = str(self._path(head)) if head else str(self.root.resolve())
        found: list[ObjectInfo] = []
        pending = [(top, f"{head}/" if head else "")]
        while pending:
            directory, base = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                key = base + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, key + "/"))
                elif not entry.name.startswith(".") and key.startswith(prefix):
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:  # deleted since the scan (compaction): gone
                        continue
                    found.append(ObjectInfo(key, size))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self._on_request("DeleteObject")
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key} under {self.root}: {exc}") from exc

    def check(self) -> None:
        self._on_request("HeadBucket")
        try:
            private_dir(self.root)
        except OSError as exc:
            raise StorageError(f"repository {self.root} is not usable: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"repository {self.root} is not writable")
