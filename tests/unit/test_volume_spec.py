"""`restore volumes` makes the kind of volume the set recorded (table), overrides change one
attribute, and the warm-up helpers: Fast Snapshot Restore waits for `enabled`, the
initialisation pass reads every byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from backupd.config import EbsSection
from backupd.errors import ProviderError, UsageError
from backupd.restore import warmup
from backupd.restore.volume_spec import VolumeOverrides, create_volume_args
from backupd.restore.volumes import Warming, ebs_volumes
from backupd.snapshot.catalog import SnapshotSet, VolumeSnapshot
from backupd.snapshot.providers.ebs import volume_spec

IO2 = VolumeSnapshot(
    "/data", "vol-1", "snap-1", volume_type="io2", size_gib=500, iops=16000,
    encrypted=True, kms_key_id="arn:aws:kms:us-east-1:1:key/k1",
)  # fmt: skip
GP3 = VolumeSnapshot("/data", "vol-2", "snap-2", volume_type="gp3", size_gib=100, iops=6000,
                     throughput=500)  # fmt: skip
OLD = VolumeSnapshot("/data", "vol-3", "snap-3")  # a manifest from before the kind was recorded


@pytest.mark.parametrize(
    ("volume", "overrides", "expected"),
    [
        (IO2, VolumeOverrides(), {"VolumeType": "io2", "Size": 500, "Iops": 16000,
                                  "Encrypted": True, "KmsKeyId": IO2.kms_key_id}),
        (GP3, VolumeOverrides(), {"VolumeType": "gp3", "Size": 100, "Iops": 6000,
                                  "Throughput": 500}),
        (OLD, VolumeOverrides(), {"VolumeType": "gp3"}),
        # another type: the recorded IOPS (of io2) are not carried over
        (IO2, VolumeOverrides(volume_type="gp3"), {"VolumeType": "gp3", "Size": 500,
                                                    "Encrypted": True, "KmsKeyId": IO2.kms_key_id}),
        (GP3, VolumeOverrides(iops=3000, throughput=125), {"VolumeType": "gp3", "Size": 100,
                                                            "Iops": 3000, "Throughput": 125}),
        (GP3, VolumeOverrides(kms_key_id="k2"), {"VolumeType": "gp3", "Size": 100, "Iops": 6000,
                                              "Throughput": 500, "Encrypted": True,
                                              "KmsKeyId": "k2"}),
    ],
)  # fmt: skip
def test_create_volume_args(
    volume: VolumeSnapshot, overrides: VolumeOverrides, expected: dict[str, Any]
) -> None:
    assert create_volume_args(volume, overrides) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        VolumeOverrides(volume_type="gp2", iops=3000),
        VolumeOverrides(volume_type="io2", throughput=500),
        VolumeOverrides(iops=-1),
    ],
)
def test_impossible_overrides_are_refused(overrides: VolumeOverrides) -> None:
    with pytest.raises(UsageError):
        create_volume_args(GP3, overrides)


def test_describe_volumes_answer_becomes_the_recorded_kind() -> None:
    answer = {"VolumeId": "vol-1", "VolumeType": "io2", "Size": 500, "Iops": 16000,
              "Encrypted": True, "KmsKeyId": "k1"}  # fmt: skip
    assert volume_spec(answer) == {
        "volume_type": "io2", "size_gib": 500, "iops": 16000, "throughput": 0,
        "encrypted": True, "kms_key_id": "k1",
    }  # fmt: skip


class FsrClient:
    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.calls: list[str] = []

    def enable_fast_snapshot_restores(self, **kwargs: Any) -> None:
        self.calls.append("enable")

    def describe_fast_snapshot_restores(self, **kwargs: Any) -> dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"FastSnapshotRestores": [{"SnapshotId": "snap-1", "State": state}]}


def test_fast_snapshot_restore_waits_until_enabled() -> None:
    client = FsrClient(["enabling", "optimizing", "enabled"])
    warmup.enable_fast_restore(client, ["snap-1"], "us-east-1a", timeout=60, poll=0.0)
    assert client.calls == ["enable"] and client.states == ["enabled"]


def test_fast_snapshot_restore_gives_up_at_its_timeout() -> None:
    with pytest.raises(ProviderError, match="not enabled within"):
        warmup.enable_fast_restore(FsrClient(["enabling"]), ["snap-1"], "z", timeout=0, poll=0)


def test_the_initialisation_pass_reads_every_byte(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.write_bytes(b"x" * (3 * warmup.CHUNK + 5))
    seen: list[int] = []
    done = warmup.read_through(device, lambda p: seen.append(p.done_bytes), interval=0.0)
    assert done == 3 * warmup.CHUNK + 5 and seen[-1] == done


def test_the_device_link_is_the_nvme_serial() -> None:
    link = warmup.device_link("vol-0abc", "/dev/disk/by-id")
    assert str(link) == "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc"


class FailingCreate(FsrClient):
    def create_volume(self, **kwargs: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "VolumeLimitExceeded"}}, "CreateVolume")

    def disable_fast_snapshot_restores(self, **kwargs: Any) -> None:
        self.calls.append("disable")


def test_fast_snapshot_restore_is_disabled_even_when_a_create_fails() -> None:
    client = FailingCreate(["enabled"])
    record = SnapshotSet("S", "ebs", "h", "o", "0", volumes=[IO2])  # snap-1
    with pytest.raises(ProviderError, match="VolumeLimitExceeded"):
        ebs_volumes(record, EbsSection(), "z", "latest", client=client,
                    warming=Warming(fast_snapshot_restore=True))  # fmt: skip
    assert client.calls == ["enable", "disable"]  # billed per hour: never left on
