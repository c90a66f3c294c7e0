"""packaging/aws/iam-policy.json allows every AWS API call in backupd/ and nothing broader.

The scan reads whatever code exists: each `.operation(` of a service the code makes clients
for (ec2 and s3 always), `get_paginator("op")` and `get_waiter("name")` become IAM actions.
A new boto3 call without a matching policy line fails here, naming the action.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from botocore.exceptions import DataNotFoundError

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "packaging" / "aws" / "iam-policy.json"
DELETE_SIDS = ("DeleteOwnedSnapshotsAndVolumes", "DeleteRepositoryObjects")

# S3's IAM actions are not named after its API operations.
S3_ACTIONS = {
    "ListObjectsV2": ["s3:ListBucket"],
    "ListObjects": ["s3:ListBucket"],
    "HeadBucket": ["s3:ListBucket"],
    "HeadObject": ["s3:GetObject"],
    "GetObjectAttributes": ["s3:GetObject"],
    "CreateMultipartUpload": ["s3:PutObject"],
    "UploadPart": ["s3:PutObject"],
    "CompleteMultipartUpload": ["s3:PutObject"],
    "CopyObject": ["s3:GetObject", "s3:PutObject"],
    "DeleteObjects": ["s3:DeleteObject"],
    "ListObjectVersions": ["s3:ListBucketVersions"],
}
# boto3's transfer helpers (not in the service model).
S3_TRANSFER = {
    "upload_file": ["s3:PutObject"],
    "upload_fileobj": ["s3:PutObject"],
    "download_file": ["s3:GetObject"],
    "download_fileobj": ["s3:GetObject"],
}
# Request parameters that need a further permission.
PARAMETER_ACTIONS = {
    "ObjectLockMode": "s3:PutObjectRetention",
    "TagSpecifications": "ec2:CreateTags",
    "SSEKMSKeyId": "kms:GenerateDataKey",
}
ALWAYS_ALLOWED = {"sts:GetCallerIdentity"}
# Granted although the scan may not find a call (yet): why each one is needed.
PLANNED = {
    "kms:Decrypt": "S3 asks KMS on the caller's behalf when reading SSE-KMS objects",
    "ec2:DescribeInstances": "restore volumes: the instance's availability zone",
    "ec2:DescribeSnapshots": "snapshots: find owned sets, wait for completion",
    "ec2:DescribeVolumes": "snapshots: map mounts to volumes; restore: wait for volumes",
    "ec2:CreateSnapshot": "snapshots, one volume at a time",
    "ec2:CreateSnapshots": "snapshots: crash-consistent multi-volume sets",
    "ec2:CopySnapshot": "snapshot.ebs.copy_to_regions",
    "ec2:CreateTags": "tags set while creating snapshots and restore volumes",
    "ec2:CreateVolume": "backupctl restore volumes / drill",
    "ec2:AttachVolume": "backupctl restore volumes / drill",
    "ec2:DetachVolume": "drill cleanup",
    "ec2:DeleteSnapshot": "retention (prune)",
    "ec2:DeleteVolume": "drill cleanup",
}

_CALL = re.compile(r"\.([a-z][a-z0-9_]*)\(")
_PAGINATOR = re.compile(r"get_paginator\(\s*[\"']([a-z0-9_]+)[\"']")
_WAITER = re.compile(r"get_waiter\(\s*[\"']([a-z0-9_]+)[\"']")
_CLIENT = re.compile(r"client\(\s*[\"']([a-z0-9-]+)[\"']")


def iam_actions(service: str, operation: str) -> list[str]:
    if service == "s3":
        return S3_ACTIONS.get(operation, [f"s3:{operation}"])
    return [f"{service}:{operation}"]


Catalog = dict[str, list[tuple[str, str]]]


def catalog(services: set[str]) -> tuple[Catalog, Catalog]:
    """Python method name -> (service, API operation), for operations and for waiters."""
    session = botocore.session.get_session()
    operations: Catalog = {}
    waiters: Catalog = {}
    for service in sorted(services):
        for op in session.get_service_model(service).operation_names:
            operations.setdefault(xform_name(op), []).append((service, op))
        try:
            model = session.get_waiter_model(service)
        except DataNotFoundError:
            continue  # a service without waiters
        for name in model.waiter_names:
            waiter_op = model.get_waiter(name).operation
            waiters.setdefault(xform_name(name), []).append((service, waiter_op))
    return operations, waiters


def calls_in(text: str, operations: Catalog, waiters: Catalog) -> list[tuple[str, list[str]]]:
    """(call as written, IAM actions it needs) for one source file."""
    found: list[tuple[str, list[str]]] = []
    for name in _CALL.findall(text) + _PAGINATOR.findall(text):
        found += [(name, iam_actions(service, op)) for service, op in operations.get(name, [])]
        if name in S3_TRANSFER:
            found.append((name, S3_TRANSFER[name]))
    for name in _WAITER.findall(text):
        found += [(f"waiter {name}", iam_actions(s, op)) for s, op in waiters.get(name, [])]
    for parameter, action in PARAMETER_ACTIONS.items():
        if re.search(rf"\b{parameter}\b", text):
            found.append((parameter, [action]))
    return found


def required_actions(sources: Iterable[str]) -> dict[str, set[str]]:
    """IAM action -> the calls in the code that need it."""
    texts = list(sources)
    services = {"ec2", "s3"} | {name for text in texts for name in _CLIENT.findall(text)}
    operations, waiters = catalog(services)
    needed: dict[str, set[str]] = {}
    for text in texts:
        for call, actions in calls_in(text, operations, waiters):
            for action in actions:
                needed.setdefault(action, set()).add(call)
    return needed


def policy() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(POLICY.read_text())
    return document


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed_actions() -> set[str]:
    return {
        action
        for statement in policy()["Statement"]
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }


def code_sources() -> list[str]:
    return [path.read_text() for path in sorted((ROOT / "backupd").rglob("*.py"))]


def test_scan_maps_calls_to_actions() -> None:
    source = """
        self.client.create_snapshots(InstanceSpecification={}, TagSpecifications=[])
        self._client.put_object(Bucket=b, Key=k, ObjectLockMode="GOVERNANCE")
        pages = self._client.get_paginator("list_objects_v2")
        waiter = self.client.get_waiter("snapshot_completed")
        parser.add_argument("--x")
    """
    assert set(required_actions([source])) == {
        "ec2:CreateSnapshots",
        "ec2:CreateTags",
        "s3:PutObject",
        "s3:PutObjectRetention",
        "s3:ListBucket",
        "ec2:DescribeSnapshots",
    }


def test_every_call_in_the_code_is_allowed() -> None:
    needed = required_actions(code_sources())
    assert "s3:PutObject" in needed  # the storage backend exists on every branch
    missing = {
        action: sorted(calls)
        for action, calls in needed.items()
        if action not in allowed_actions() and action not in ALWAYS_ALLOWED
    }
    assert not missing, f"iam-policy.json lacks: {missing}"


def test_nothing_granted_without_a_reason() -> None:
    needed = set(required_actions(code_sources()))
    unexplained = allowed_actions() - needed - set(PLANNED)
    assert not unexplained, f"granted but never called: {sorted(unexplained)}"


def test_no_wildcard_or_negated_grants() -> None:
    for statement in policy()["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, (statement["Sid"], action)
        resources = as_list(statement["Resource"])
        if "*" in resources:  # only for calls without resource-level permissions
            assert all(fnmatch.fnmatch(a, "ec2:Describe*") for a in as_list(statement["Action"])), (
                statement["Sid"]
            )
        for resource in resources:
            if resource.startswith("arn:aws:s3"):
                assert "BUCKET" in resource, (statement["Sid"], resource)


def test_deletes_live_in_their_own_statements() -> None:
    for statement in policy()["Statement"]:
        deletes = [a for a in as_list(statement["Action"]) if ":Delete" in a]
        if statement["Sid"] in DELETE_SIDS:
            assert deletes == as_list(statement["Action"]), statement["Sid"]
        else:
            assert not deletes, statement["Sid"]


@pytest.mark.parametrize("sid", ["DeleteOwnedSnapshotsAndVolumes", "CreateOwnedSnapshots"])
def test_snapshot_statements_need_the_ownership_tag(sid: str) -> None:
    (statement,) = [s for s in policy()["Statement"] if s["Sid"] == sid]
    assert "backupd:owner" in json.dumps(statement["Condition"])


def test_policy_is_tight_enough_to_matter() -> None:
    """The scan is live: dropping a needed statement is caught."""
    needed = set(required_actions(code_sources()))
    put = {"s3:PutObject"}
    assert needed & put
    without = allowed_actions() - put
    assert needed - without - ALWAYS_ALLOWED == put
