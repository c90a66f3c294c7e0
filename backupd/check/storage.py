"""The backup repository: a probe object is written with the configured encryption and
Object Lock, read back, listed and deleted — what the daemon does every second."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable

from backupd.check.result import Result, fail, ok, warn
from backupd.config import StorageSection
from backupd.errors import StorageError
from backupd.storage import ObjectStore

PROBE_PREFIX = "check/"


def _fix(section: StorageSection, step: str) -> str:
    if section.url.startswith("file://"):
        path = section.url.removeprefix("file://")
        return f"mkdir -p {path} && chown backupd {path} (the daemon's user)"
    return (
        f"check that the bucket in {section.url} exists, storage.region/endpoint_url, and that "
        f"the instance role allows s3:{step} on it (packaging/aws/iam-policy.json)"
    )


def check(section: StorageSection, store: ObjectStore) -> list[Result]:
    key = f"{PROBE_PREFIX}probe-{socket.gethostname()}-{secrets.token_hex(4)}"
    body = secrets.token_bytes(32)
    results: list[Result] = []

    def step(name: str, action: str, run: Callable[[], str]) -> bool:
        try:
            results.append(ok(f"storage.{name}", run()))
            return True
        except StorageError as exc:
            results.append(fail(f"storage.{name}", exc.message, _fix(section, action)))
            return False

    def get() -> str:
        if store.get(key) != body:
            raise StorageError(f"{key} read back different bytes")
        return "read back byte for byte"

    def listed() -> str:
        if key not in {info.key for info in store.list(PROBE_PREFIX)}:
            raise StorageError(f"{key} was written but LIST does not show it")
        return f"LIST under {PROBE_PREFIX} shows it"

    def put() -> str:
        store.put(key, body)
        return f"wrote {key} to {store.url}"

    root = section.url.removeprefix("file://") if section.url.startswith("file://") else ""
    if root and not os.path.isdir(root):  # creating it here, as root, would lock the daemon out
        return [
            fail("storage.put", f"repository directory {root} does not exist", _fix(section, ""))
        ]
    if not step("put", "PutObject", put):
        return results
    if step("get", "GetObject", get):
        results += protection(section, store, key)
    step("list", "ListBucket", listed)

    def delete() -> str:
        store.delete(key)
        return "deleted the probe"

    step("delete", "DeleteObject", delete)
    return results


def protection(section: StorageSection, store: ObjectStore, key: str) -> list[Result]:
    """S3 only: did the probe land encrypted and locked as configured?"""
    describe = getattr(store, "protection", None)
    if describe is None or not (section.sse or section.object_lock_days):
        return []
    try:
        seen = describe(key)
    except StorageError as exc:
        return [warn("storage.protection", exc.message, "allow s3:GetObject on the prefix")]
    results = []
    if section.sse:
        if seen["sse"] != section.sse:
            results.append(
                fail(
                    "storage.sse",
                    f"probe stored with {seen['sse'] or 'no'} encryption, not {section.sse}",
                    "check storage.sse / kms_key_id and the bucket's encryption settings",
                )
            )
        else:
            key_note = f" key {seen['kms_key_id']}" if seen["kms_key_id"] else ""
            results.append(ok("storage.sse", f"{seen['sse']}{key_note}"))
    if section.object_lock_days:
        if seen["lock_mode"] != "GOVERNANCE":
            results.append(
                fail(
                    "storage.object_lock",
                    f"probe stored with lock mode {seen['lock_mode'] or 'none'}",
                    "create the bucket with Object Lock enabled (security.md)",
                )
            )
        else:
            results.append(
                ok(
                    "storage.object_lock",
                    f"GOVERNANCE for {section.object_lock_days} day(s) (the probe's locked "
                    "version stays that long; its delete only adds a delete marker)",
                )
            )
    return results
