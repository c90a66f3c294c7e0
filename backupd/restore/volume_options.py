"""`restore volumes` flags for the new volumes' kind and warm-up, and what they build."""

from __future__ import annotations

import argparse
import sys

from backupd.restore.volume_spec import VolumeOverrides
from backupd.restore.volumes import Warming
from backupd.restore.warmup import ReadProgress


def volume_options(parser: argparse.ArgumentParser) -> None:
    kind = parser.add_argument_group("EBS: the new volumes (default: as the set recorded them)")
    kind.add_argument("--volume-type", default="", help="e.g. gp3, io2 (default: as recorded)")
    kind.add_argument("--iops", type=int, default=0, help="provisioned IOPS (gp3, io1, io2)")
    kind.add_argument("--throughput", type=int, default=0, help="MiB/s (gp3)")
    kind.add_argument("--kms-key", default="", help="encrypt with this KMS key instead")
    warm = parser.add_argument_group("EBS: warming (restore time includes it)")
    warm.add_argument(
        "--fast-snapshot-restore",
        action="store_true",
        help="enable Fast Snapshot Restore in the zone first (billed hourly; disabled after)",
    )
    warm.add_argument(
        "--initialize",
        action="store_true",
        help="read every block of the attached devices once (needs --device)",
    )


def overrides_of(args: argparse.Namespace) -> VolumeOverrides:
    return VolumeOverrides(args.volume_type, args.iops, args.throughput, args.kms_key)


def warming_of(args: argparse.Namespace) -> Warming:
    on_read = None if args.json or not sys.stderr.isatty() else show_read
    return Warming(args.fast_snapshot_restore, initialize=args.initialize, on_read=on_read)


def show_read(progress: ReadProgress) -> None:
    eta = progress.eta_seconds
    print(
        f"\rinitializing {progress.path}: {progress.done_bytes}/{progress.total_bytes} bytes, "
        f"{progress.rate / 1e6:.1f} MB/s, ETA {round(eta) if eta is not None else '?'}s   ",
        end="",
        file=sys.stderr,
        flush=True,
    )
