"""Runs every check the config calls for, in the order an operator fixes things: the config
itself, this host, the service user, the database, the repository, EC2."""

from __future__ import annotations

from backupd.check import access, ec2, local, mysql, storage
from backupd.check import config as config_check
from backupd.check.result import Result
from backupd.config import Config
from backupd.storage import open_store


def run_checks(config: Config, service_user: str = access.SERVICE_USER) -> list[Result]:
    from backupd.snapshot.service import owner_id

    store = open_store(config.storage)
    results = config_check.check(config)
    results += local.check(config)
    results += access.check(config, service_user)
    results += mysql.check(config, store)
    results += storage.check(config.storage, store)
    if config.snapshot.enabled and config.snapshot.provider == "ebs":
        results += ec2.check(config, owner_id())
    return results
