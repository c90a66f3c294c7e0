"""The runtime freeze record and `backupd thaw-all` without a usable config (FITHAW faked)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from backupd import cli, freeze_record
from backupd.freeze import ThawResult


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemd's RUNTIME_DIRECTORY, and no fallback record anywhere else."""
    directory = tmp_path / "run"
    monkeypatch.setenv(freeze_record.RUNTIME_DIR_ENV, str(directory))
    monkeypatch.setattr(freeze_record, "DEFAULT_RUNTIME_DIR", str(tmp_path / "default"))
    return directory


@pytest.fixture
def thawed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fake FITHAW: /frozen/* thaw, .../stuck fails, paths under /gone do not exist."""
    calls: list[str] = []

    def fake(mounts: Iterable[str]) -> list[ThawResult]:
        results = []
        for mount in mounts:
            calls.append(mount)
            if mount.startswith("/gone") or mount.endswith("/stuck"):
                why = "cannot open: No such file" if mount.startswith("/gone") else "EPERM"
                results.append(ThawResult(mount, False, why))
            else:
                results.append(ThawResult(mount, mount.startswith("/frozen")))
        return results

    monkeypatch.setattr(cli, "thaw_all", fake)
    return calls


def test_record_round_trip_and_clear(runtime: Path) -> None:
    path = freeze_record.record_path("/elsewhere/control.sock")
    assert path == runtime / "frozen.json"  # systemd's directory wins over the socket's
    freeze_record.write_record(path, ["/a", "/b"])
    assert freeze_record.read_record(path) == ["/a", "/b"]
    freeze_record.clear_record(path)
    assert freeze_record.read_record(path) == [] and not path.exists()
    freeze_record.clear_record(path)  # idempotent


def test_record_path_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(freeze_record.RUNTIME_DIR_ENV, raising=False)
    assert freeze_record.record_path("/x/y/control.sock") == Path("/x/y/frozen.json")
    assert freeze_record.record_path(None) == Path("/run/backupd/frozen.json")


@pytest.mark.parametrize("body", [b"garbage", b"{}", b'{"mounts": "/a"}', b'{"mounts": [1]}'])
def test_unreadable_record_is_an_error_not_an_empty_list(runtime: Path, body: bytes) -> None:
    runtime.mkdir()
    (runtime / "frozen.json").write_bytes(body)
    with pytest.raises(freeze_record.RecordUnreadable):
        freeze_record.read_record(runtime / "frozen.json")


def test_thaw_all_with_a_missing_config_thaws_the_record(
    runtime: Path, thawed: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    freeze_record.write_record(runtime / "frozen.json", ["/frozen/data", "/gone/old"])
    code = cli.main(["thaw-all", "--config", str(tmp_path / "none.toml")])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert "/frozen/data: thawed (recorded)" in out and "/gone/old: gone (recorded)" in out
    assert "missing; thawing the recorded mounts only" in err
    assert not (runtime / "frozen.json").exists()


def test_thaw_all_with_a_valid_config_thaws_both(
    runtime: Path, thawed: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    freeze_record.write_record(runtime / "frozen.json", ["/frozen/old"])
    config = tmp_path / "backupd.toml"
    config.write_text('[storage]\nurl = "file:///srv/repo"\n[snapshot]\nmounts = ["/frozen/new"]\n')
    assert cli.main(["thaw-all", "--config", str(config)]) == 0
    assert thawed == ["/frozen/old", "/frozen/new"]  # the record, even if no longer configured
    out, _err = capsys.readouterr()
    assert "/frozen/new: thawed (configured)" in out


def test_thaw_all_fails_and_keeps_the_record_when_a_thaw_fails(
    runtime: Path, thawed: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    freeze_record.write_record(runtime / "frozen.json", [str(stuck), "/frozen/a"])
    (tmp_path / "bad.toml").write_text("not [toml")
    assert cli.main(["thaw-all", "--config", str(tmp_path / "bad.toml")]) == 1
    _out, err = capsys.readouterr()
    assert f"{stuck}: EPERM (recorded)" in err and "invalid configuration" in err
    assert freeze_record.read_record(runtime / "frozen.json") == [str(stuck), "/frozen/a"]


def test_thaw_all_reports_an_unreadable_record(
    runtime: Path, thawed: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime.mkdir()
    (runtime / "frozen.json").write_text("{")
    assert cli.main(["thaw-all", "--config", str(tmp_path / "none.toml")]) == 1
    assert "cannot read the freeze record" in capsys.readouterr().err


def test_a_thaw_failure_is_counted_and_never_as_completed() -> None:
    from prometheus_client import CollectorRegistry

    from backupd.snapshot.catalog import FAILED, SnapshotSet
    from backupd.snapshot.metrics import SnapshotMetrics

    registry = CollectorRegistry()
    metrics = SnapshotMetrics(registry)
    record = SnapshotSet(set_id="s", provider="local", host="h", owner="o", version="v",
                         trigger="manual", mounts=["/m"], started_at=1.0)  # fmt: skip
    metrics.observe(record.with_(state=FAILED, error_code="thaw_failed", completed_at=2.0))
    metrics.observe(record.with_(state=FAILED, error_code="freeze_failed", completed_at=3.0))
    assert registry.get_sample_value("backupd_thaw_failures_total") == 1
    assert registry.get_sample_value("backupd_snapshots_total", {"result": "failed"}) == 2
