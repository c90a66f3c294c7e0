"""What kind of EBS volume `restore volumes` makes: the kind the set captured, unless told.

A set records each volume's type, size, IOPS, throughput and encryption (DescribeVolumes at
snapshot time). A restore that silently made gp3 of an io2 volume, or dropped its KMS key,
would be slower or differently protected than the volume it replaces. Overrides change one
attribute; IOPS and throughput recorded for one type are not carried to another type (gp2's
baseline IOPS would be refused for gp3, and io2's would be wrong for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backupd.errors import UsageError
from backupd.snapshot.catalog import VolumeSnapshot

DEFAULT_TYPE = "gp3"  # manifests written before the volume's kind was recorded
IOPS_TYPES = ("gp3", "io1", "io2")
THROUGHPUT_TYPES = ("gp3",)


@dataclass(frozen=True)
class VolumeOverrides:
    """`restore volumes` flags; empty/0 = as recorded."""

    volume_type: str = ""
    iops: int = 0
    throughput: int = 0
    kms_key_id: str = ""


def create_volume_args(volume: VolumeSnapshot, overrides: VolumeOverrides) -> dict[str, Any]:
    """CreateVolume arguments (beyond snapshot, zone and tags) for one restored volume."""
    if overrides.iops < 0 or overrides.throughput < 0:
        raise UsageError("--iops and --throughput must be positive")
    kind = overrides.volume_type or volume.volume_type or DEFAULT_TYPE
    same_kind = kind == volume.volume_type
    args: dict[str, Any] = {"VolumeType": kind}
    if volume.size_gib:
        args["Size"] = volume.size_gib
    iops = overrides.iops or (volume.iops if same_kind else 0)
    if iops and kind in IOPS_TYPES:
        args["Iops"] = iops
    elif overrides.iops:
        raise UsageError(f"--iops applies to {', '.join(IOPS_TYPES)}, not {kind}")
    throughput = overrides.throughput or (volume.throughput if same_kind else 0)
    if throughput and kind in THROUGHPUT_TYPES:
        args["Throughput"] = throughput
    elif overrides.throughput:
        raise UsageError(f"--throughput applies to gp3 only, not {kind}")
    key = overrides.kms_key_id or volume.kms_key_id
    if overrides.kms_key_id or volume.encrypted:
        args["Encrypted"] = True
        if key:
            args["KmsKeyId"] = key
    return args


def describe_spec(args: dict[str, Any], volume: VolumeSnapshot) -> dict[str, Any]:
    """The made volume's kind for the command's output, and where each part came from."""
    return {
        "volume_type": args["VolumeType"],
        "size_gib": args.get("Size"),
        "iops": args.get("Iops"),
        "throughput": args.get("Throughput"),
        "encrypted": bool(args.get("Encrypted", False)),
        "kms_key_id": args.get("KmsKeyId"),
        "recorded": bool(volume.volume_type),  # False: an old manifest; gp3 and sizes default
    }
