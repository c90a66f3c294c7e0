"""The EBS provider: one CreateSnapshots call for the instance's data volumes while frozen,
tagged with the set, the coordinate and the owner; after the thaw, DescribeSnapshots until
every snapshot completed (a set still pending at the timeout is followed up later).

The instance comes from the config, else IMDSv2, else the configured volumes' attachment
(DescribeVolumes). Per-volume CreateSnapshot calls, made concurrently, are the fallback only
when the volumes are not all attached to that one instance. Calls made while commits are
blocked go through a client with timeouts inside the lock budget and no automatic retries (the
coordinator retries with a fresh lock). Deletes touch only snapshots carrying our owner tag.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backupd.config import EbsSection
from backupd.errors import ProviderError, SnapshotErrored, SnapshotStillPending
from backupd.snapshot.catalog import COMPLETED, PENDING, SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.base import (
    TAG_MOUNT,
    TAG_OWNER,
    TAG_SET_ID,
    ProgressCallback,
    Target,
    progress_text,
)

BY_ID = "/dev/disk/by-id"
NVME_PREFIX = "nvme-Amazon_Elastic_Block_Store_vol"
IMDS_TIMEOUT = 2.0


def imds_instance_id(base_url: str) -> str:
    """IMDSv2: a session token first, then the instance id."""
    if not base_url.startswith(("http://", "https://")):
        raise OSError(f"imds_url must be http(s): {base_url}")
    token_request = urllib.request.Request(  # noqa: S310
        f"{base_url}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    with urllib.request.urlopen(token_request, timeout=IMDS_TIMEOUT) as response:  # noqa: S310
        token = response.read().decode()
    id_request = urllib.request.Request(  # noqa: S310
        f"{base_url}/latest/meta-data/instance-id",
        headers={"X-aws-ec2-metadata-token": token},
    )
    with urllib.request.urlopen(id_request, timeout=IMDS_TIMEOUT) as response:  # noqa: S310
        return str(response.read().decode().strip())


def volume_of_mount(mount: str, by_id: str = BY_ID) -> str:
    """Map a mount to its EBS volume through the NVMe serial link (vol0123... -> vol-0123...)."""
    dev = os.stat(mount).st_dev
    for link in sorted(Path(by_id).glob(f"{NVME_PREFIX}*")):
        if "-part" in link.name:
            continue
        try:
            if os.stat(link).st_rdev == dev:
                return "vol-" + link.name.removeprefix(NVME_PREFIX).split("_")[0].split("-")[0]
        except OSError:
            continue
    raise ProviderError(message=f"{mount}: no EBS volume found under {by_id}")


def locked_config(budget_seconds: float) -> Config:
    """For calls made while commits are blocked: one try, each wait inside the budget."""
    return Config(
        connect_timeout=budget_seconds,
        read_timeout=budget_seconds,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


def volume_spec(volume: dict[str, Any]) -> dict[str, Any]:
    """What `restore volumes` needs to make the same kind of volume, from DescribeVolumes."""
    return {
        "volume_type": str(volume.get("VolumeType", "")),
        "size_gib": int(volume.get("Size", 0) or 0),
        "iops": int(volume.get("Iops", 0) or 0),
        "throughput": int(volume.get("Throughput", 0) or 0),
        "encrypted": bool(volume.get("Encrypted", False)),
        "kms_key_id": str(volume.get("KmsKeyId", "") or ""),
    }


def attached_instance(volumes: list[dict[str, Any]]) -> str:
    """The one instance every volume is attached to (DescribeVolumes), else ""."""
    owners = set()
    for volume in volumes:
        attached = [a for a in volume.get("Attachments", []) if a.get("State") == "attached"]
        if len(attached) != 1:
            return ""
        owners.add(attached[0]["InstanceId"])
    return owners.pop() if len(owners) == 1 else ""


THROTTLED = ("Throttling", "RequestLimitExceeded", "SnapshotCreationPerVolumeRateExceeded")


def transient(exc: Exception) -> bool:
    """A failure a later try may not meet: no answer, a timeout, throttling, a 5xx."""
    if not isinstance(exc, ClientError):
        return True  # BotoCoreError: connection refused or reset, timeouts
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error.get("Code", "") in THROTTLED or int(status) >= 500


def _fail(action: str, exc: Exception) -> ProviderError:
    return ProviderError(message=f"{action}: {exc}", transient=transient(exc))


class EbsProvider:
    name = "ebs"

    def __init__(
        self, section: EbsSection, owner: str, client: Any = None, locked_seconds: float = 10.0
    ) -> None:
        self.section = section
        self.owner = owner
        self.client: Any = client or self._client()
        self.locked_seconds = locked_seconds  # snapshot.max_freeze_seconds
        self.locked_client: Any = client  # made in prepare(), before anything is locked
        self.instance_id = section.instance_id
        self.exclude: list[str] = []  # attached data volumes not in the set
        self.specs: dict[str, dict[str, Any]] = {}  # volume id -> volume_spec(), for the set

    def _client(self, config: Config | None = None) -> Any:
        return boto3.client(
            "ec2",
            region_name=self.section.region or None,
            endpoint_url=self.section.endpoint_url or None,
            config=config,
        )

    def prepare(self, mounts: list[str]) -> list[Target]:
        if self.locked_client is None:
            self.locked_client = self._client(locked_config(self.locked_seconds))
        volumes = list(self.section.volumes)
        if not volumes:
            volumes = [volume_of_mount(mount, self.section.device_links) for mount in mounts]
        if not self.instance_id:
            try:
                self.instance_id = imds_instance_id(self.section.imds_url)
            except OSError:
                self.instance_id = self._instance_of(volumes)  # "" : one call per volume
        if self.instance_id:
            self.exclude = [v for v in self.attached() if v not in volumes]
        if any(v not in self.specs for v in volumes):  # not seen in the calls above
            with contextlib.suppress(ProviderError):  # a manifest without them still restores
                self._describe(VolumeIds=volumes)
        mount_of = dict(zip(volumes, mounts, strict=False))
        return [Target(mount_of.get(v, ",".join(mounts)), v) for v in volumes]

    def attached(self) -> list[str]:
        """The volumes attached to our instance."""
        filters = [{"Name": "attachment.instance-id", "Values": [self.instance_id]}]
        return [v["VolumeId"] for v in self._describe(Filters=filters)]

    def _instance_of(self, volumes: list[str]) -> str:
        """Without IMDS: the instance the volumes are attached to, so one call covers them."""
        return attached_instance(self._describe(VolumeIds=volumes))

    def _describe(self, **kwargs: Any) -> list[dict[str, Any]]:
        """DescribeVolumes through the locked client first, which opens the connection the
        call made while locked reuses; through the retrying client when that fails."""
        try:
            answer = self.locked_client.describe_volumes(**kwargs)
        except (BotoCoreError, ClientError):
            try:
                answer = self.client.describe_volumes(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise _fail("DescribeVolumes", exc) from exc
        found = list(answer.get("Volumes", []))
        self.specs.update({v["VolumeId"]: volume_spec(v) for v in found if "VolumeId" in v})
        return found

    def start(
        self, set_id: str, targets: list[Target], tags: dict[str, str], deadline: float
    ) -> list[VolumeSnapshot]:
        """Bounded by the locked client's timeouts; the deadline itself is the coordinator's."""
        wanted = {t.volume: t for t in targets}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        made: dict[str, VolumeSnapshot] = {}
        attached = set(wanted) - set(self.exclude) if self.instance_id else set()
        if self.instance_id and attached:
            made.update(self._create_multi(set_id, wanted, tag_list))
        rest = [target for volume, target in wanted.items() if volume not in made]
        made.update(self._create_each(set_id, rest, tag_list))
        return [replace(made[v], **self.specs.get(v, {})) for v in wanted]

    def _create_each(
        self, set_id: str, targets: list[Target], tag_list: list[dict[str, str]]
    ) -> dict[str, VolumeSnapshot]:
        """One CreateSnapshot per volume, all at once: the stall is one call, not N."""
        if len(targets) <= 1:
            return {t.volume: self._create_one(set_id, t, tag_list) for t in targets}
        with ThreadPoolExecutor(len(targets), thread_name_prefix="create-snapshot") as pool:
            futures = [pool.submit(self._create_one, set_id, t, tag_list) for t in targets]
            return {t.volume: f.result() for t, f in zip(targets, futures, strict=True)}

    def _create_multi(
        self, set_id: str, wanted: dict[str, Target], tag_list: list[dict[str, str]]
    ) -> dict[str, VolumeSnapshot]:
        try:
            answer = self.locked_client.create_snapshots(
                **self.create_snapshots_request(set_id, tag_list)
            )
        except (BotoCoreError, ClientError) as exc:
            raise _fail("CreateSnapshots", exc) from exc
        made = {}
        for snap in answer.get("Snapshots", []):
            volume, snapshot_id = snap["VolumeId"], snap["SnapshotId"]
            if volume not in wanted:  # an endpoint that ignored the exclusions: not ours to keep
                self._delete_ids([snapshot_id], self.locked_client)
                continue
            made[volume] = VolumeSnapshot(
                wanted[volume].mount, volume, snapshot_id, method="create-snapshots"
            )
        return made

    def create_snapshots_request(
        self, set_id: str, tag_list: list[dict[str, str]]
    ) -> dict[str, Any]:
        """The CreateSnapshots arguments (`backupctl check` sends the same with DryRun)."""
        return {
            "InstanceSpecification": {
                "InstanceId": self.instance_id,
                "ExcludeBootVolume": True,
                "ExcludeDataVolumeIds": self.exclude,
            },
            "Description": f"backupd {set_id}",
            "TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list}],
            "CopyTagsFromSource": "volume",
        }

    def _create_one(
        self, set_id: str, target: Target, tag_list: list[dict[str, str]]
    ) -> VolumeSnapshot:
        tags = [*tag_list, {"Key": TAG_MOUNT, "Value": target.mount}]
        try:
            snap = self.locked_client.create_snapshot(
                VolumeId=target.volume,
                Description=f"backupd {set_id}",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}],
            )
        except (BotoCoreError, ClientError) as exc:
            raise _fail(f"CreateSnapshot {target.volume}", exc) from exc
        return VolumeSnapshot(target.mount, target.volume, snap["SnapshotId"], method="create")

    def wait(
        self,
        set_id: str,
        volumes: list[VolumeSnapshot],
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> list[VolumeSnapshot]:
        """Ask EC2 every `poll_seconds` until every snapshot is completed, then copy to other
        regions. Still pending at `timeout`: SnapshotStillPending (the set stays followed up);
        a snapshot in state error, or gone: SnapshotErrored."""
        if not volumes:
            return volumes
        deadline = time.monotonic() + timeout
        current, last_error = volumes, ""
        while True:
            try:
                current = self.describe(current)
                last_error = ""
            except SnapshotErrored:
                raise
            except ProviderError as exc:  # no news this time; EC2 keeps the snapshots going
                last_error = exc.message
            if on_progress is not None:
                on_progress(current)
            if all(v.state == COMPLETED for v in current):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SnapshotStillPending(
                    current,
                    set_id=set_id,
                    seconds=timeout,
                    progress=last_error or progress_text(current),
                )
            time.sleep(min(self.section.poll_seconds, remaining))
        if not self.section.copy_to_regions:
            return current
        return [self._copy(v, set_id) for v in current]

    def describe(self, volumes: list[VolumeSnapshot]) -> list[VolumeSnapshot]:
        """One DescribeSnapshots: each volume's EC2 state and progress."""
        ids = [v.snapshot_id for v in volumes]
        try:
            answer = self.client.describe_snapshots(SnapshotIds=ids)
        except ClientError as exc:
            if "NotFound" in str(exc.response.get("Error", {}).get("Code", "")):
                raise SnapshotErrored(ids=", ".join(ids), how="missing") from exc
            raise _fail("DescribeSnapshots", exc) from exc
        except BotoCoreError as exc:
            raise _fail("DescribeSnapshots", exc) from exc
        seen = {s["SnapshotId"]: s for s in answer.get("Snapshots", [])}
        errored = [i for i in ids if seen.get(i, {}).get("State") == "error"]
        if errored:
            reasons = {seen[i].get("StateMessage", "") for i in errored} - {""}
            how = "in state error" + (f" ({'; '.join(sorted(reasons))})" if reasons else "")
            raise SnapshotErrored(ids=", ".join(errored), how=how)
        missing = [i for i in ids if i not in seen]
        if missing:
            raise SnapshotErrored(ids=", ".join(missing), how="missing")
        return [
            replace(
                v,
                state=COMPLETED if seen[v.snapshot_id]["State"] == COMPLETED else PENDING,
                progress=str(seen[v.snapshot_id].get("Progress", "")),
            )
            for v in volumes
        ]

    def _regional(self, region: str) -> Any:
        return boto3.client(
            "ec2", region_name=region, endpoint_url=self.section.endpoint_url or None
        )

    def _copy(self, volume: VolumeSnapshot, set_id: str) -> VolumeSnapshot:
        source_region = self.client.meta.region_name
        copies = dict(volume.copies)
        owner_tag = [
            {"Key": TAG_OWNER, "Value": self.owner},
            {"Key": TAG_SET_ID, "Value": set_id},
        ]
        for region in self.section.copy_to_regions:
            if region in copies:
                continue  # copied before (a resumed set)
            remote = self._regional(region)
            try:
                answer = remote.copy_snapshot(
                    SourceRegion=source_region,
                    SourceSnapshotId=volume.snapshot_id,
                    Description=f"backupd copy of {volume.snapshot_id}",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": owner_tag}],
                )
            except (BotoCoreError, ClientError) as exc:
                raise _fail(f"CopySnapshot to {region}", exc) from exc
            copies[region] = answer["SnapshotId"]
        return VolumeSnapshot(**{**volume.__dict__, "copies": copies})

    def owned(self, set_id: str, client: Any = None) -> list[str]:
        """Snapshot ids carrying both our owner tag and this set's id."""
        try:
            answer = (client or self.client).describe_snapshots(
                OwnerIds=["self"],
                Filters=[
                    {"Name": f"tag:{TAG_OWNER}", "Values": [self.owner]},
                    {"Name": f"tag:{TAG_SET_ID}", "Values": [set_id]},
                ],
            )
        except (BotoCoreError, ClientError) as exc:
            raise _fail("DescribeSnapshots", exc) from exc
        return [s["SnapshotId"] for s in answer.get("Snapshots", [])]

    def _delete_ids(self, ids: list[str], client: Any = None) -> None:
        for snapshot_id in ids:
            try:
                (client or self.client).delete_snapshot(SnapshotId=snapshot_id)
            except ClientError as exc:
                if "NotFound" not in str(exc):
                    raise _fail(f"DeleteSnapshot {snapshot_id}", exc) from exc

    def delete(self, record: SnapshotSet) -> list[str]:
        if record.provider != self.name or record.owner != self.owner:
            return []
        ids = self.owned(record.set_id)
        self._delete_ids(ids)
        for region in {r for v in record.volumes for r in v.copies}:
            remote = self._regional(region)
            copies = self.owned(record.set_id, remote)
            self._delete_ids(copies, remote)
            ids += copies
        return ids
