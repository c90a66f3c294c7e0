"""Snapshot providers: EBS (EC2 API) and local (block-device images)."""

from __future__ import annotations

from backupd.config import Config
from backupd.snapshot.providers.base import SnapshotProvider


def open_provider(config: Config, owner: str) -> SnapshotProvider:
    if config.snapshot.provider == "local":
        from backupd.snapshot.providers.local import LocalProvider

        return LocalProvider(
            config.snapshot.local.directory,
            config.snapshot.max_freeze_seconds,
            config.snapshot.local.copy_bytes_per_second,
        )
    from backupd.snapshot.providers.ebs import EbsProvider

    return EbsProvider(
        config.snapshot.ebs, owner, locked_seconds=config.snapshot.max_freeze_seconds
    )
