"""The repository backends on real parts: a directory, and S3 on moto by endpoint URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from backupd.config import StorageSection
from backupd.errors import ObjectMissing, StorageError
from backupd.storage import ObjectStore, open_store
from backupd.storage.streaming import open_object
from tests.testbed.moto import MotoServer

pytestmark = pytest.mark.integration


def exercise(store: ObjectStore) -> None:
    store.check()
    store.put("a/1.bin", b"one")
    store.put("a/2.bin", b"two" * 1000)
    store.put("b/1.bin", b"")
    assert store.get("a/2.bin") == b"two" * 1000
    assert [(o.key, o.size) for o in store.list("a/")] == [("a/1.bin", 3), ("a/2.bin", 3000)]
    assert [o.key for o in store.list()] == ["a/1.bin", "a/2.bin", "b/1.bin"]
    assert hasattr(store, "reader")
    with open_object(store, "a/2.bin") as body:  # streamed: S3's body, the file
        assert body.read(7) == b"twotwot" and body.read() == (b"two" * 1000)[7:]
    with pytest.raises(ObjectMissing), open_object(store, "a/none.bin"):
        pass
    store.put("a/1.bin", b"replaced")
    assert store.get("a/1.bin") == b"replaced"
    store.delete("a/1.bin")
    store.delete("a/1.bin")  # absent is success
    with pytest.raises(ObjectMissing):
        store.get("a/1.bin")


def test_file_store(tmp_path: Path) -> None:
    exercise(open_store(StorageSection(url=f"file://{tmp_path / 'repo'}")))
    assert not list((tmp_path / "repo").rglob(".*tmp*"))


def test_s3_store_on_moto(moto: MotoServer) -> None:
    bucket = f"repo-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=bucket)
    section = StorageSection(
        url=f"s3://{bucket}/host-1", endpoint_url=moto.url, region="us-east-1", sse="AES256"
    )
    exercise(open_store(section))
    raw = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["host-1/a/2.bin", "host-1/b/1.bin"]  # the prefix is the store's own
    head = raw.head_object(Bucket=bucket, Key="host-1/a/2.bin", ChecksumMode="ENABLED")
    assert head.get("ServerSideEncryption") == "AES256"
    assert head.get("ChecksumSHA256")


def test_s3_unreachable_is_a_clear_error(moto: MotoServer) -> None:
    store = open_store(
        StorageSection(url="s3://no-such-bucket/x", endpoint_url=moto.url, region="us-east-1")
    )
    with pytest.raises(StorageError, match="no-such-bucket"):
        store.check()
    dead = open_store(
        StorageSection(url="s3://b/x", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    )
    with pytest.raises(StorageError, match="not reachable"):
        dead.check()
