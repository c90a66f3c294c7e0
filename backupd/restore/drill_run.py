"""One drill as the config says: the local images or, on EC2, new EBS volumes attached here.

Shared by the daemon (scheduled and `POST /v1/drill`) and `backupctl drill`. The drill's
record (drill_resources) lives in the directory given (the daemon's `<state_dir>/drill`);
what a killed drill left there is removed first, under the same lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from backupd.config import Config
from backupd.log import get_logger
from backupd.restore import ebs_drill
from backupd.restore.drill import DrillOptions, DrillResult, Materialise, drill
from backupd.restore.drill_resources import DrillLedger, Ec2Factory, clean_up, new_run_id
from backupd.restore.replay import Progress
from backupd.restore_target import Target
from backupd.snapshot.catalog import SnapshotSet
from backupd.storage import ObjectStore

_log = get_logger("drill")


def ec2_factory(config: Config) -> Ec2Factory | None:
    """EC2 is asked only on an EBS host (a local bed has no region to ask)."""
    if config.snapshot.provider != "ebs":
        return None
    return lambda: ebs_drill.ec2_client(config)


def clean_leftovers(config: Config, directory: Path) -> list[str]:
    """What killed drills left (DrillRunning while a drill holds the record)."""
    ledger = DrillLedger(directory)
    with ledger.held():
        return clean_up(ledger, ec2_factory(config), ebs_drill.owner())


def run_drill(
    config: Config,
    store: ObjectStore,
    target: Target,
    workdir: Path,
    record_dir: Path,
    options: DrillOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> DrillResult:
    ledger = DrillLedger(record_dir)
    with ledger.held():
        left = clean_up(ledger, ec2_factory(config), ebs_drill.owner())
        if left:
            _log.warning("removed what an earlier drill left", removed="; ".join(left))
        ledger.run_id = new_run_id()
        ledger.add("run", ledger.run_id)
        with _forget_run_when_clean(ledger):
            return drill(
                store,
                target,
                config.snapshot.local.directory,
                workdir,
                options,
                on_progress,
                materialise=_materialiser(config, ledger),
                provider=config.snapshot.provider,
                ledger=ledger,
            )


def _materialiser(config: Config, ledger: DrillLedger) -> Materialise | None:
    if config.snapshot.provider != "ebs":
        return None  # drill's default: the local images
    host = ebs_drill.EbsDrillHost.from_config(config)

    def materialise(record: SnapshotSet, where: Path) -> Any:
        return ebs_drill.materialised(record, host, where, ledger)

    return materialise


@contextlib.contextmanager
def _forget_run_when_clean(ledger: DrillLedger) -> Iterator[None]:
    """Drop the run's entry once nothing of it is left (else the next clean-up sweeps EC2)."""
    try:
        yield
    finally:
        mine = [e for e in ledger.entries() if e.get("run_id") == ledger.run_id]
        if all(e["kind"] == "run" for e in mine):
            ledger.remove("run", ledger.run_id)
