"""A repository on S3 (or any S3-compatible endpoint) through boto3.

Every upload carries an SHA-256 checksum that S3 verifies on receipt; server-side encryption
and Object Lock retention are applied per object when configured.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from backupd.config import StorageSection
from backupd.errors import ObjectMissing, StorageError
from backupd.storage.base import ObjectInfo
from backupd.storage.requests import OnRequest, count_s3_requests, ignore_request

_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3Store:
    def __init__(
        self, section: StorageSection, client: Any = None, on_request: OnRequest = ignore_request
    ) -> None:
        parsed = urlparse(section.url)
        self.url = section.url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._section = section
        self._client = client or boto3.client(
            "s3",
            region_name=section.region or None,
            endpoint_url=section.endpoint_url or None,
            config=BotoConfig(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        count_s3_requests(self._client, on_request)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        extra: dict[str, Any] = {}
        if self._section.sse:
            extra["ServerSideEncryption"] = self._section.sse
            if self._section.kms_key_id:
                extra["SSEKMSKeyId"] = self._section.kms_key_id
        if self._section.object_lock_days:
            extra["ObjectLockMode"] = "GOVERNANCE"
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self._section.object_lock_days
            )
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=digest,
                **extra,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload of {key} to {self.url} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        with self.reader(key) as body:
            return body.read()

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        """The object as a stream (see backupd/storage/streaming.py)."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                raise ObjectMissing(key=key) from exc
            raise StorageError(f"download of {key} from {self.url} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"download of {key} from {self.url} failed: {exc}") from exc
        body = response["Body"]
        try:
            yield io.BufferedReader(_Body(body, f"download of {key} from {self.url} failed"))
        finally:
            body.close()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], int(item["Size"]))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"listing {self.url} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"delete of {key} from {self.url} failed: {exc}") from exc

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"bucket {self.bucket} is not reachable: {exc}") from exc

    def protection(self, key: str) -> dict[str, str]:
        """How S3 stored `key`: encryption, KMS key and Object Lock (what `check` compares)."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"HEAD of {key} in {self.url} failed: {exc}") from exc
        return {
            "sse": str(head.get("ServerSideEncryption", "")),
            "kms_key_id": str(head.get("SSEKMSKeyId", "")),
            "lock_mode": str(head.get("ObjectLockMode", "")),
        }


class _Body(io.RawIOBase):
    """A response body whose read errors are StorageErrors, like the request's."""

    def __init__(self, body: Any, what: str) -> None:
        super().__init__()
        self._body = body
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._read(None)

    def _read(self, size: int | None) -> bytes:
        try:
            data: bytes = self._body.read(size)
        except BotoCoreError as exc:
            raise StorageError(f"{self._what}: {exc}") from exc
        return data
