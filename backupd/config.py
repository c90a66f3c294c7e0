"""The typed configuration model: every key, its type, its default and its limits.

Every section forbids unknown keys, so a misspelt key is an error rather than a silently
ignored setting. Cross-field rules ("contradictory values") live in model validators next to
the fields they relate.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backupd.cron import trigger_for
from backupd.errors import BackupdError
from backupd.restore_target import parse_target

DEFAULT_CONFIG_PATH = "/etc/backupd/backupd.toml"

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable, and types are
    strict (TOML booleans only, no string that merely looks like a number or a boolean)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _absolute_path(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{what} must be an absolute path, got {value!r}")
    return value


class DaemonSection(Section):
    socket: str = "/run/backupd/control.sock"
    socket_group: str = "backupd-readers"
    admin_group: str = ""
    state_dir: str = "/var/lib/backupd"
    spool_dir: str = "/var/cache/backupd/spool"
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    socket_request_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    socket_reader_slots: Annotated[int, Field(ge=1, le=1024)] = 16
    socket_admin_slots: Annotated[int, Field(ge=1, le=1024)] = 8
    socket_max_waits: Annotated[int, Field(ge=0, le=4096)] = 64

    @field_validator("socket", "state_dir", "spool_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value, "path")


class MetricsSection(Section):
    listen: str = "127.0.0.1:9571"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value == "":
            return value  # metrics disabled
        parse_listen(value)
        return value


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:port`) and check both halves."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("expected host:port")
    port = int(port_text)
    if not 0 <= port < 65536:
        raise ValueError(f"port {port} out of range 0..65535 (0 picks a free port)")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        if host != "localhost":
            raise ValueError(
                f"listen host must be an IP address or localhost, got {host!r}"
            ) from exc
    return host, port


class MysqlSection(Section):
    socket: str = ""
    host: str = ""
    port: Annotated[int, Field(ge=1, le=65535)] = 3306
    option_file: str = "/etc/backupd/my.cnf"
    server_id: Annotated[int, Field(ge=1, le=2**32 - 1)] = 4_000_000_001
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 5.0
    reconnect_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @model_validator(mode="after")
    def _one_endpoint(self) -> MysqlSection:
        if self.socket and self.host:
            raise ValueError("set either mysql.socket or mysql.host, not both")
        return self


class StorageSection(Section):
    url: str = "file:///var/lib/backupd/repository"
    region: str = ""
    endpoint_url: str = ""
    sse: Literal["", "AES256", "aws:kms"] = ""
    kms_key_id: str = ""
    object_lock_days: NonNegativeInt = 0
    # The archive belongs to a cluster, not to one server: a promoted replica or a restored
    # server continues the same history (as a new timeline). Empty: this host's name.
    cluster: str = ""

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError(
                f"cluster must be letters, digits, '.', '_' or '-' (1-63, no '/'), got {value!r}"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError("an s3 url needs a bucket: s3://bucket/prefix")
        elif parsed.scheme == "file":
            if parsed.netloc or not parsed.path.startswith("/"):
                raise ValueError("a file url must be file:///absolute/path")
        else:
            raise ValueError("url must start with s3:// or file://")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("http", "https"):
            raise ValueError("endpoint_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StorageSection:
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError('storage.kms_key_id needs storage.sse = "aws:kms"')
        is_file = self.url.startswith("file://")
        if is_file and (self.sse or self.object_lock_days):
            raise ValueError("storage.sse and storage.object_lock_days apply to s3:// urls only")
        return self


class RetentionSection(Section):
    keep_last: NonNegativeInt = 3
    hourly: NonNegativeInt = 24
    daily: NonNegativeInt = 7
    weekly: NonNegativeInt = 4
    monthly: NonNegativeInt = 6
    yearly: NonNegativeInt = 0

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionSection:
        if not any(
            (self.keep_last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        ):
            raise ValueError("retention keeps nothing: set keep_last or a period count above 0")
        return self


class HooksSection(Section):
    pre_freeze: list[str] = Field(default_factory=list)
    post_thaw: list[str] = Field(default_factory=list)
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0


class EbsSection(Section):
    region: str = ""
    endpoint_url: str = ""
    volumes: list[str] = Field(default_factory=list)
    copy_to_regions: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    instance_id: str = ""
    imds_url: str = "http://169.254.169.254"
    wait_timeout_seconds: PositiveInt = 3600
    device_links: str = "/dev/disk/by-id"
    poll_seconds: Annotated[float, Field(gt=0, le=600)] = 15.0

    @field_validator("device_links")
    @classmethod
    def _links_absolute(cls, value: str) -> str:
        return _absolute_path(value, "device_links")

    @field_validator("volumes")
    @classmethod
    def _volume_ids(cls, value: list[str]) -> list[str]:
        for volume in value:
            if not volume.startswith("vol-"):
                raise ValueError(f"not an EBS volume id: {volume!r}")
        return value


class LocalSection(Section):
    directory: str = "/var/lib/backupd/snapshots"
    copy_bytes_per_second: PositiveInt = 200 * 1024 * 1024

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value, "directory")


class SnapshotSection(Section):
    enabled: bool = True
    provider: Literal["ebs", "local"] = "ebs"
    schedule: str = "0 */6 * * *"
    timezone: str = "UTC"
    jitter_seconds: NonNegativeInt = 0
    mounts: list[str] = Field(default_factory=list)
    max_freeze_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    lock_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    long_query_seconds: Annotated[float, Field(gt=0)] = 60.0
    on_long_query: Literal["skip", "wait", "kill-selects"] = "skip"
    long_query_wait_seconds: Annotated[float, Field(ge=0)] = 300.0
    crash_consistent_fallback: bool = False
    lock_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    lock_retry_delay_seconds: Annotated[float, Field(ge=0, le=600)] = 5.0
    max_restore_seconds: Annotated[float, Field(ge=0)] = 0.0  # 0: off (restore_estimate.py)
    restore_estimate_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    hooks: HooksSection = Field(default_factory=HooksSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    ebs: EbsSection = Field(default_factory=EbsSection)
    local: LocalSection = Field(default_factory=LocalSection)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        for mount in value:
            _absolute_path(mount, "mount")
            if PurePosixPath(mount) == PurePosixPath("/"):
                raise ValueError("refusing to freeze / (it would hang the whole host)")
        if len(set(value)) != len(value):
            raise ValueError("mounts are listed more than once")
        return value


class BinlogSection(Section):
    enabled: bool = True
    flush_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    segment_max_bytes: Annotated[int, Field(ge=4096)] = 16 * 1024 * 1024
    compression: Literal["zstd", "none"] = "zstd"
    level: Annotated[int, Field(ge=1, le=22)] = 3
    spool_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 1024 * 1024 * 1024
    heartbeat_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    check_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    index: bool = True  # write the change index (`backupctl find`) while archiving
    index_flush_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    rollup_bytes: NonNegativeInt = 32 * 1024 * 1024

    @field_validator("rollup_bytes")
    @classmethod
    def _rollup_off_or_useful(cls, value: int) -> int:
        if 0 < value < 4096:
            raise ValueError("binlog.rollup_bytes is 0 (off) or at least 4096")
        return value

    @model_validator(mode="after")
    def _spool_fits_segment(self) -> BinlogSection:
        if self.segment_max_bytes * 2 > self.spool_max_bytes:
            raise ValueError(
                "binlog.spool_max_bytes must hold at least two segments (2 x segment_max_bytes)"
            )
        return self


def check_cron(value: str) -> str:
    try:
        trigger_for(value)
    except ValueError as exc:
        raise ValueError(f"not a cron expression: {exc}") from exc
    return value


def check_timezone(value: str) -> str:
    from backupd.cron import zone

    zone(value)
    return value


class DrillSection(Section):
    enabled: bool = False
    schedule: str = "0 3 * * 0"
    timezone: str = "UTC"
    target: str = "latest"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        try:
            parse_target(value)
        except BackupdError as exc:  # UsageError: its message says what is expected
            raise ValueError(exc.message) from exc
        return value


class RestoreSection(Section):
    """`restore plan|replay` and `drill`: where fetched objects are kept, how many at once."""

    work_dir: str = "/var/cache/backupd/restore"
    fetch_workers: Annotated[int, Field(ge=1, le=64)] = 4
    cache_max_bytes: NonNegativeInt = 20 * 1024 * 1024 * 1024

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value, "work_dir")


class NotifySection(Section):
    on_success: list[str] = Field(default_factory=list)
    on_failure: list[str] = Field(default_factory=list)
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    alarm_after_seconds: Annotated[float, Field(ge=0, le=86400)] = 60.0

    @field_validator("on_success", "on_failure")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        if value:
            _absolute_path(value[0], "the command (first element)")
        return value


class Config(Section):
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    mysql: MysqlSection = Field(default_factory=MysqlSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    snapshot: SnapshotSection = Field(default_factory=SnapshotSection)
    binlog: BinlogSection = Field(default_factory=BinlogSection)
    drill: DrillSection = Field(default_factory=DrillSection)
    notify: NotifySection = Field(default_factory=NotifySection)
    restore: RestoreSection = Field(default_factory=RestoreSection)

    @model_validator(mode="after")
    def _no_freezing_own_dirs(self) -> Config:
        own = {
            "daemon.state_dir": self.daemon.state_dir,
            "daemon.spool_dir": self.daemon.spool_dir,
        }
        for mount in self.snapshot.mounts:
            for key, path in own.items():
                if PurePosixPath(path).is_relative_to(PurePosixPath(mount)):
                    raise ValueError(
                        f"snapshot.mounts {mount!r} holds {key} ({path}); freezing it would "
                        "block the daemon's own writes"
                    )
        return self
