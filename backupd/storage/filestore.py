"""A repository in a local directory (tests, or a mounted volume): atomic, fsynced writes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from backupd.durable import write_file
from backupd.errors import ObjectMissing, StorageError
from backupd.private import private_dir
from backupd.storage.base import ObjectInfo


class FileStore:
    def __init__(self, root: str | Path, url: str = "") -> None:
        self.root = Path(root)
        self.url = url or f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or not key:
            raise StorageError(f"key escapes the repository: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            private_dir(path.parent)
            write_file(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {key} under {self.root}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissing(key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key} under {self.root}: {exc}") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        found = []
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, full.stat().st_size))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key} under {self.root}: {exc}") from exc

    def check(self) -> None:
        try:
            private_dir(self.root)
        except OSError as exc:
            raise StorageError(f"repository {self.root} is not usable: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"repository {self.root} is not writable")
