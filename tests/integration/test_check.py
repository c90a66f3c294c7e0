"""`backupctl check` on the real bed: MariaDB, moto as S3 and EC2, a loop-mounted ext4.

A good setup passes; each broken dependency the issue names fails on the line naming it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.clients import backupctl
from tests.conftest import ConfigFactory
from tests.integration.test_check_config import check_config
from tests.integration.test_snapshot_ebs import REGION, ebs_config, instance  # noqa: F401
from tests.testbed.http_proxy import RewritingProxy, deny_dry_run
from tests.testbed.mariadb import BACKUPD_PASSWORD, MariaDB
from tests.testbed.moto import MotoServer

pytestmark = pytest.mark.integration


@pytest.fixture
def good(ebs_config: dict[str, Any], moto: MotoServer) -> dict[str, Any]:  # noqa: F811
    """EBS provider on moto, an S3 repository with SSE and Object Lock, the bed's MariaDB."""
    bucket = f"check-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name=REGION)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    ebs_config["storage"] = {
        "url": f"s3://{bucket}/db1",
        "region": REGION,
        "endpoint_url": moto.url,
        "sse": "AES256",
        "object_lock_days": 1,
    }
    ebs_config["snapshot"]["enabled"] = True
    return ebs_config


def check(write_config: ConfigFactory, config: dict[str, Any], *extra: str) -> tuple[int, Any]:
    path = write_config(config, f"check-{uuid.uuid4().hex[:6]}.toml")
    done = backupctl("--config", str(path), "check", "--user", "root", *extra, timeout=120)
    if "--nagios" in extra:
        return done.returncode, done.stdout
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["checks"]}


def failed(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["checks"] if c["status"] == "FAIL"}


def test_good_setup_passes(good: dict[str, Any], write_config: ConfigFactory) -> None:
    code, doc = check(write_config, good, "--json")
    assert code == 0 and doc["ok"] and failed(doc) == {}, doc
    checks = by_name(doc)
    for name in (
        "mysql.connect", "mysql.privilege.replication", "mysql.privilege.reload",
        "mysql.binlog_format", "mysql.log_bin", "mysql.sync_binlog", "storage.put",
        "storage.get", "storage.list", "storage.delete", "storage.sse", "storage.object_lock",
        "ec2.instance", "ec2.CreateSnapshots", "ec2.CreateVolume", "access.daemon.state_dir",
        f"local.mount[{good['snapshot']['mounts'][0]}]",
    ):  # fmt: skip
        assert checks[name]["status"] == "OK", checks.get(name)
    assert checks["local.clock"]["status"] in ("OK", "WARN")
    nagios_code, line = check(write_config, good, "--nagios")
    assert line.startswith("BACKUPD CHECK ") and line.count("\n") == 1
    assert nagios_code == {"OK": 0, "WARN": 1}[doc["status"]], line
    text = backupctl("--config", str(write_config(good)), "check", "--user", "root").stdout
    counts = doc["counts"]
    assert "OK   mysql.binlog_format: ROW" in text.splitlines()
    assert text.splitlines()[-1] == f"{counts['OK']} ok, {counts['WARN']} warnings, 0 failed"


def test_missing_bucket_fails_naming_it(good: dict[str, Any], write_config: ConfigFactory) -> None:
    good["storage"]["url"] = "s3://no-such-bucket-backupd/db1"
    code, doc = check(write_config, good, "--json")
    assert code == 1 and not doc["ok"]
    assert "NoSuchBucket" in failed(doc)["storage.put"]["detail"]
    assert "bucket" in failed(doc)["storage.put"]["fix"]
    nagios_code, line = check(write_config, good, "--nagios")
    assert nagios_code == 2 and line.startswith("BACKUPD CHECK CRITICAL") and "storage.put" in line


def test_statement_binlog_format_fails(
    good: dict[str, Any], write_config: ConfigFactory, live_mariadb: MariaDB
) -> None:
    live_mariadb.sql("SET GLOBAL binlog_format = 'STATEMENT'")
    try:
        code, doc = check(write_config, good, "--json")
    finally:
        live_mariadb.sql("SET GLOBAL binlog_format = 'ROW'")
    assert code == 1
    line = failed(doc)["mysql.binlog_format"]
    assert line["detail"].startswith("STATEMENT") and "ROW" in line["fix"]


def test_account_without_replication_privilege_fails(
    good: dict[str, Any], write_config: ConfigFactory, live_mariadb: MariaDB, workdir: Path
) -> None:
    user = f"norepl{uuid.uuid4().hex[:6]}"
    live_mariadb.sql(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{BACKUPD_PASSWORD}'")
    live_mariadb.sql(
        f"GRANT RELOAD, PROCESS, SELECT, BINLOG MONITOR ON *.* TO '{user}'@'localhost'"
    )
    option_file = workdir / "norepl.cnf"
    option_file.write_text(f"[client]\nuser = {user}\npassword = {BACKUPD_PASSWORD}\n")
    good["mysql"]["option_file"] = str(option_file)
    try:
        code, doc = check(write_config, good, "--json")
    finally:
        live_mariadb.sql(f"DROP USER '{user}'@'localhost'")
    assert code == 1
    line = failed(doc)["mysql.privilege.replication"]
    assert "REPLICATION SLAVE" in line["detail"] and user in line["fix"]
    assert by_name(doc)["mysql.privilege.reload"]["status"] == "OK"


def test_unfreezable_mount_fails(
    good: dict[str, Any], write_config: ConfigFactory, workdir: Path
) -> None:
    plain = workdir / "not-a-mount"
    plain.mkdir()
    good["snapshot"]["mounts"] = [str(plain)]
    good["snapshot"]["ebs"]["volumes"] = good["snapshot"]["ebs"]["volumes"][:1]
    code, doc = check(write_config, good, "--json")
    assert code == 1
    line = failed(doc)[f"local.mount[{plain}]"]
    assert "not a mount point" in line["detail"] or "root filesystem" in line["detail"]


def test_an_impossible_combination_fails_as_check_config_refuses_it(
    good: dict[str, Any], write_config: ConfigFactory
) -> None:
    """Snapshots enabled with nothing to freeze: the daemon would refuse to start, so check
    says so, on a line of its own, with the same words as check-config."""
    good["snapshot"]["mounts"] = []
    code, doc = check(write_config, good, "--json")
    assert code == 1
    line = failed(doc)["config.combination[snapshot.mounts]"]
    assert "nothing to freeze" in line["detail"] and "snapshot.mounts" in line["fix"]
    checked = check_config(write_config(good, "same.toml"))
    assert checked.returncode != 0 and line["detail"] in checked.stdout + checked.stderr


def test_service_user_access_is_tested_as_that_user(
    good: dict[str, Any], write_config: ConfigFactory
) -> None:
    path = write_config(good, "as-nobody.toml")
    done = backupctl("--config", str(path), "check", "--user", "nobody", "--json", timeout=120)
    doc = json.loads(done.stdout)
    assert done.returncode == 1
    line = failed(doc)["access.mysql.option_file"]  # 0600, owned by root
    assert line["detail"].startswith("nobody cannot read") and "chown nobody" in line["fix"]
    assert by_name(doc)["mysql.connect"]["status"] == "OK"  # check itself runs as root


@pytest.fixture
def denying_ec2(moto: MotoServer) -> Iterator[RewritingProxy]:
    proxy = RewritingProxy(moto.port).start()
    proxy.answers.append(deny_dry_run(b"CreateSnapshots"))
    try:
        yield proxy
    finally:
        proxy.stop()


def test_ec2_denying_create_snapshots_fails(
    good: dict[str, Any], write_config: ConfigFactory, denying_ec2: RewritingProxy
) -> None:
    good["snapshot"]["ebs"]["endpoint_url"] = denying_ec2.url
    code, doc = check(write_config, good, "--json")
    assert code == 1
    line = failed(doc)["ec2.CreateSnapshots"]
    assert "UnauthorizedOperation" in line["detail"] and "iam-policy.json" in line["fix"]
    assert by_name(doc)["ec2.CreateVolume"]["status"] == "OK"  # only the denied action fails
    assert any(b"DryRun=true" in body for body in denying_ec2.requests)
