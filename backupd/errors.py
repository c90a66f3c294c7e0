"""Errors with a stable code, an exit code and an HTTP status.

Each class's docstring is its message template, so the daemon, the control API and backupctl
all describe a failure the same way; the code travels over the API and backupctl rebuilds the
typed error (and so the exit code) from it.
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNHEALTHY = 4
EXIT_PERMISSION = 5
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus names it


class BackupdError(Exception):
    """{message}"""

    code: ClassVar[str] = "internal_error"
    exit_code: ClassVar[int] = EXIT_FAILED
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        if message is not None:
            fields["message"] = message
        self.fields = fields
        template = (self.__doc__ or "{message}").strip().splitlines()[0]
        try:
            self.message = template.format(**fields)
        except (KeyError, IndexError):
            self.message = message or template
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class ConfigError(BackupdError):
    """Invalid configuration: {message}"""

    code = "invalid_config"
    exit_code = EXIT_CONFIG
    http_status = 400

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class UsageError(BackupdError):
    """{message}"""

    code = "bad_request"
    exit_code = EXIT_USAGE
    http_status = 400


class NotFound(BackupdError):
    """No such resource: {path}"""

    code = "not_found"
    http_status = 404


class MethodNotAllowed(BackupdError):
    """Method {method} is not allowed on {path}"""

    code = "method_not_allowed"
    exit_code = EXIT_USAGE
    http_status = 405


class PayloadTooLarge(BackupdError):
    """Request body of {size} bytes exceeds the limit of {limit} bytes"""

    code = "payload_too_large"
    exit_code = EXIT_USAGE
    http_status = 413


class PermissionDenied(BackupdError):
    """Permission denied: {message}"""

    code = "permission_denied"
    exit_code = EXIT_PERMISSION
    http_status = 403


class DaemonUnreachable(BackupdError):
    """Cannot reach backupd at {socket}: {reason}"""

    code = "daemon_unreachable"
    exit_code = EXIT_UNREACHABLE
    http_status = 503


class Unhealthy(BackupdError):
    """Unhealthy: {message}"""

    code = "unhealthy"
    exit_code = EXIT_UNHEALTHY
    http_status = 503


class DatabaseUnavailable(BackupdError):
    """Database unavailable: {message}"""

    code = "database_unavailable"
    http_status = 503


class StorageError(BackupdError):
    """Storage error: {message}"""

    code = "storage_error"
    http_status = 502


class ObjectMissing(StorageError):
    """No object at {key}"""

    code = "object_missing"
    http_status = 404


class ArchiveCorrupt(BackupdError):
    """Binlog archive problem: {message}"""

    code = "archive_corrupt"
    http_status = 500


class Conflict(BackupdError):
    """{message}"""

    code = "conflict"
    http_status = 409


class SnapshotInProgress(BackupdError):
    """A snapshot run is already in progress ({set_id})"""

    code = "snapshot_in_progress"
    http_status = 409


class SnapshotNotFound(BackupdError):
    """No snapshot set {set_id}"""

    code = "snapshot_not_found"
    http_status = 404


class LongQueriesRunning(BackupdError):
    """Snapshot skipped: {count} statement(s) running over {seconds}s: {detail}"""

    code = "long_query_running"
    http_status = 409


class LockFailed(BackupdError):
    """Could not block commits ({statement}): {reason}"""

    code = "lock_failed"
    http_status = 503


class FreezeRefused(BackupdError):
    """Refusing to freeze: {reason}"""

    code = "freeze_refused"
    http_status = 400


class FreezeFailed(BackupdError):
    """Freeze of {mount} failed: {reason}"""

    code = "freeze_failed"


class HookFailed(BackupdError):
    """Snapshot hook {hook!r} failed: {reason}"""

    code = "hook_failed"


class ProviderError(BackupdError):
    """Snapshot provider error: {message}"""

    code = "provider_error"
    http_status = 502


class PruneRefused(BackupdError):
    """Prune refused, nothing was deleted: {reason}"""

    code = "prune_refused"
    http_status = 503


class SnapshotStillPending(BackupdError):
    """Snapshot set {set_id} still pending after {seconds:g} s ({progress})"""

    code = "snapshot_pending"
    http_status = 202

    def __init__(self, volumes: list[Any], **fields: Any) -> None:
        self.volumes = volumes  # the set's volumes with EC2's latest state and progress
        super().__init__(**fields)


class SnapshotErrored(ProviderError):
    """EC2 reports snapshot(s) {ids} {how}: the set cannot complete"""

    code = "snapshot_error"


class ControlBusy(BackupdError):
    """Control socket busy: all {slots} {role} request slots are in use; try again"""

    code = "control_busy"
    exit_code = EXIT_UNREACHABLE
    http_status = 503


class ThawFailed(BackupdError):
    """Thaw of {mount} failed: {reason}; it may still be frozen: run `backupd thaw-all`"""

    code = "thaw_failed"


class LockDeadlineExceeded(BackupdError):
    """Commits stayed blocked for max_freeze_seconds={seconds} before the snapshot was started ({during}); the lock was released, the filesystems thawed and the set discarded"""  # noqa: E501

    code = "lock_deadline_exceeded"
    http_status = 504


class CopyTooSlow(BackupdError):
    """Refusing a local copy of {mount} while commits are blocked: {size_mib} MiB at {rate_mib} MiB/s takes about {seconds} s, over max_freeze_seconds={budget}; put snapshot.local.directory on a reflink filesystem (XFS reflink=1, btrfs) with the data, or raise snapshot.local.copy_bytes_per_second if the disk is faster"""  # noqa: E501

    code = "copy_too_slow"
    http_status = 400


class ProtectedServer(BackupdError):
    """Refusing to replay into the server backupd protects: {why}; replay into the restored copy (--target-socket or --target-host/--target-port of the server started on the restored data)"""  # noqa: E501

    code = "protected_server"
    http_status = 409


class UndoRefused(BackupdError):
    """Undo refused: {message}"""

    code = "undo_refused"
    http_status = 409


class TableDumpFailed(BackupdError):
    """Table dump failed: {message}"""

    code = "table_dump_failed"


class TargetPositionMismatch(BackupdError):
    """Refusing to replay: the target reports {have}, but snapshot set {set_id} is at {want}; {why}. Replay only into a server freshly restored from that set (restore volumes, then the replay command it printed)"""  # noqa: E501

    code = "target_position_mismatch"
    http_status = 409


class RelayUnavailable(BackupdError):
    """Cannot replay through the target's replication applier (--method relay): {why}; use --method pipe or --method auto"""  # noqa: E501

    code = "relay_unavailable"
    http_status = 409


_BY_CODE: dict[str, type[BackupdError]] = {}


def _register_all(base: type[BackupdError]) -> None:
    for sub in base.__subclasses__():
        _BY_CODE.setdefault(sub.code, sub)
        _register_all(sub)


def from_code(code: str, message: str) -> BackupdError:
    """Rebuild a typed error from an API error body; the message is kept as sent."""
    _register_all(BackupdError)  # cheap, and picks up subclasses defined since the last call
    cls = _BY_CODE.get(code, BackupdError)
    err = Exception.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.fields = {}
    if isinstance(err, ConfigError):
        err.problems = [message]
    return err


class DrillFailed(BackupdError):
    """Drill failed: {message}"""

    code = "drill_failed"


class DrillRunning(BackupdError):
    """A drill is already running on this host (it holds {directory}/drill.lock)"""

    code = "drill_running"
    http_status = 409


class TransactionOffTimeline(BackupdError):
    """Transaction {ref} is not in the history of timeline {timeline}: {where}; to name that transaction, choose its timeline with {choose}"""  # noqa: E501

    code = "transaction_off_timeline"
    http_status = 409
