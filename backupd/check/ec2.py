"""EC2, when the snapshot provider is `ebs`: the instance, the mounts -> volumes mapping, and
whether the role may create the snapshot set and restore volumes (asked with DryRun, so
nothing is created)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backupd.check.result import Result, fail, ok, warn
from backupd.config import Config
from backupd.errors import BackupdError
from backupd.snapshot.providers.base import TAG_OWNER, TAG_SET_ID, Target
from backupd.snapshot.providers.ebs import EbsProvider

POLICY = "/usr/share/backupd/aws/iam-policy.json"
DRY_RUN_OK = "DryRunOperation"
DENIED = "UnauthorizedOperation"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def dry_run(name: str, call: Any, denied_status: str = "FAIL", **kwargs: Any) -> Result:
    """DryRunOperation means allowed; UnauthorizedOperation means the role lacks it."""
    action = name.rsplit(".", 1)[-1]
    try:
        answer = call(DryRun=True, **kwargs)
    except ClientError as exc:
        code = _code(exc)
        if code == DRY_RUN_OK:
            return ok(name, "allowed (DryRun)")
        fix = f"allow ec2:{action}: attach {POLICY} (placeholders replaced) to the instance role"
        detail = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code == DENIED:
            return (warn if denied_status == "WARN" else fail)(name, f"denied: {detail}", fix)
        return fail(name, detail, "check snapshot.ebs.region/endpoint_url and the instance id")
    except BotoCoreError as exc:
        return fail(name, str(exc), "check snapshot.ebs.region/endpoint_url and credentials")
    created = [s.get("SnapshotId") for s in answer.get("Snapshots", [answer])]
    return warn(
        name,
        f"the endpoint ignored DryRun and created {created}",
        f"use a real EC2 endpoint; delete {created} by hand",
    )


def check(config: Config, owner: str) -> list[Result]:
    section = config.snapshot.ebs
    provider = EbsProvider(section, owner)
    try:
        targets = provider.prepare(list(config.snapshot.mounts))
    except BackupdError as exc:
        return [
            fail(
                "ec2.volumes",
                exc.message,
                "set snapshot.ebs.volumes, or check snapshot.mounts and snapshot.ebs.device_links",
            )
        ]
    results = [_instance(provider, config)]
    results += _volumes(provider, targets)
    if not targets:
        return results
    tags = [{"Key": TAG_OWNER, "Value": owner}, {"Key": TAG_SET_ID, "Value": "check"}]
    if provider.instance_id:
        request = provider.create_snapshots_request("check", tags)
        results.append(dry_run("ec2.CreateSnapshots", provider.client.create_snapshots, **request))
    else:
        results.append(
            dry_run(
                "ec2.CreateSnapshot",
                provider.client.create_snapshot,
                VolumeId=targets[0].volume,
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}],
            )
        )
    results.append(_create_volume(provider, targets[0], owner))
    return results


def _instance(provider: EbsProvider, config: Config) -> Result:
    if provider.instance_id:
        source = "snapshot.ebs.instance_id" if config.snapshot.ebs.instance_id else "IMDSv2"
        return ok("ec2.instance", f"{provider.instance_id} (from {source})")
    return warn(
        "ec2.instance",
        f"instance id unknown (IMDSv2 at {config.snapshot.ebs.imds_url} did not answer): each "
        "volume gets its own CreateSnapshot, not one multi-volume point in time",
        "set snapshot.ebs.instance_id, or allow IMDSv2 (hop limit 1 is enough on the host)",
    )


def _volumes(provider: EbsProvider, targets: list[Target]) -> list[Result]:
    if not targets:
        return [
            fail(
                "ec2.volumes",
                "no volume to snapshot",
                "set snapshot.mounts (the data filesystems) or snapshot.ebs.volumes",
            )
        ]
    attached: set[str] | None = None
    if provider.instance_id:
        try:
            attached = set(provider.attached())
        except BackupdError as exc:
            return [fail("ec2.volumes", exc.message, "allow ec2:DescribeVolumes")]
    results = []
    for target in targets:
        name = f"ec2.volume[{target.mount}]"
        if attached is not None and target.volume not in attached:
            results.append(
                warn(
                    name,
                    f"{target.volume} is not attached to {provider.instance_id}",
                    "list the instance's own volumes in snapshot.ebs.volumes",
                )
            )
        else:
            results.append(ok(name, target.volume))
    return results


def _create_volume(provider: EbsProvider, target: Target, owner: str) -> Result:
    """Restores create volumes from our snapshots; before the first one, a blank volume is
    all that can be asked about (and the policy may rightly deny it: only a warning)."""
    try:
        volume = provider.client.describe_volumes(VolumeIds=[target.volume])["Volumes"][0]
        ours = provider.client.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_OWNER}", "Values": [owner]}]
        )["Snapshots"]
    except (BotoCoreError, ClientError, IndexError) as exc:
        return fail("ec2.CreateVolume", f"cannot describe {target.volume}: {exc}", "allow "
                    "ec2:DescribeVolumes and ec2:DescribeSnapshots")  # fmt: skip
    source: dict[str, Any] = {"SnapshotId": ours[0]["SnapshotId"]} if ours else {"Size": 1}
    return dry_run(
        "ec2.CreateVolume",
        provider.client.create_volume,
        "FAIL" if ours else "WARN",
        AvailabilityZone=volume["AvailabilityZone"],
        VolumeType="gp3",
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": TAG_OWNER, "Value": owner}]}
        ],
        **source,
    )
