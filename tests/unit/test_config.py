"""Config loading: defaults, every problem named by dotted path, environment overrides."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from backupd.config import Config, parse_listen
from backupd.config_loader import load_config, parse_env_value
from backupd.errors import ConfigError
from tests.clients import BIN_DIR

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "backupd.example.toml"


def problems_for(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return info.value.problems


def test_example_config_is_valid_and_equals_defaults() -> None:
    """Except the server's socket, and snapshots: off until the operator names the mounts."""
    config = load_config(EXAMPLE, {})
    defaults = Config()
    differs = {"mysql": {"socket"}, "snapshot": {"enabled"}}
    assert config.model_dump(exclude=differs) == defaults.model_dump(exclude=differs)
    assert config.snapshot.enabled is False


def test_example_documents_every_key() -> None:
    """Every key of the model appears in the example with a comment above it."""
    text = EXAMPLE.read_text()

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                found += keys(sub, f"{prefix}{name}.")
            else:
                found.append(f"{prefix}{name}")
        return found

    for key in keys(Config):
        assert f"\n{key.rsplit('.', 1)[-1]} = " in text, f"{key} missing from the example"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("")
    assert load_config(path, {}) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[binlog]\nflush_secnds = 2\n",
            "binlog.flush_secnds = 2: unknown key; did you mean binlog.flush_seconds?",
        ),
        ("[snapshott]\n", "snapshott = {}: unknown key; did you mean snapshot?"),
        ("[snapshot.retention]\ndaily = -1\n", "snapshot.retention.daily = -1: must be greater"),
        ("[snapshot.retention]\ndaily = 'x'\n", 'snapshot.retention.daily = "x": expected an'),
        ("[mysql]\nport = 70000\n", "mysql.port = 70000: must be less than or equal to 65535"),
        ("[mysql]\nsocket = '/s'\nhost = 'h'\n", "mysql: set either mysql.socket or mysql.host"),
        ("[storage]\nurl = 'ftp://x'\n", 'storage.url = "ftp://x": url must start with s3://'),
        ("[storage]\nkms_key_id = 'k'\n", "storage: storage.kms_key_id needs storage.sse"),
        ("[snapshot]\nmounts = ['/']\n", 'snapshot.mounts = ["/"]: refusing to freeze /'),
        ("[snapshot]\nmounts = ['data']\n", "mount must be an absolute path, got 'data'"),
        ("[snapshot]\nschedule = 'every day'\n", 'snapshot.schedule = "every day": not a cron'),
        ("[snapshot]\ntimezone = 'Mars/Base'\n", "unknown time zone 'Mars/Base'"),
        ("[metrics]\nlisten = 'nowhere'\n", 'metrics.listen = "nowhere": expected host:port'),
        ("[binlog]\nsegment_max_bytes = 900000000\n", "binlog: binlog.spool_max_bytes"),
        (
            "[snapshot.retention]\nkeep_last=0\nhourly=0\ndaily=0\nweekly=0\nmonthly=0\n",
            "snapshot.retention: retention keeps nothing",
        ),
        (
            "[daemon]\nspool_dir = '/data/spool'\n[snapshot]\nmounts = ['/data']\n",
            "snapshot.mounts '/data' holds daemon.spool_dir",
        ),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_for(tmp_path, text)
    assert any(expected in problem for problem in problems), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, "[binlog]\nflush_secnds = 2\nlevel = 99\n[mysql]\nport = 0\n")
    assert len(problems) == 3


def test_environment_overrides_win_and_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[storage]\nurl = 's3://a/b'\n")
    config = load_config(
        path,
        {
            "BACKUPD_STORAGE__ENDPOINT_URL": "http://127.0.0.1:5000",
            "BACKUPD_SNAPSHOT__RETENTION__DAILY": "9",
            "BACKUPD_SNAPSHOT__MOUNTS": '["/data"]',
            "BACKUPD_BINLOG__ENABLED": "false",
            "UNRELATED": "x",
        },
    )
    assert config.storage.endpoint_url == "http://127.0.0.1:5000"
    assert config.snapshot.retention.daily == 9
    assert config.snapshot.mounts == ["/data"]
    assert config.binlog.enabled is False
    problems = problems_for(tmp_path, "", {"BACKUPD_BINLOG__LEVL": "3"})
    assert problems == [
        "BACKUPD_BINLOG__LEVL=3: names no config key; did you mean BACKUPD_BINLOG__LEVEL "
        "(binlog.level)?"
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [("3", 3), ("1.5", 1.5), ("true", True), ('["a", "b"]', ["a", "b"]), ("s3://x/y", "s3://x/y")],
)
def test_env_values_read_as_toml(raw: str, value: object) -> None:
    assert parse_env_value(raw) == value


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9571", ("127.0.0.1", 9571)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


def test_check_config_command_exit_codes(tmp_path: Path) -> None:
    option_file = tmp_path / "my.cnf"  # the package installs /etc/backupd/my.cnf
    option_file.write_text("[client]\nuser = backupd\n")
    ok = subprocess.run(
        [str(BIN_DIR / "backupd"), "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BACKUPD_MYSQL__OPTION_FILE": str(option_file)},
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[snapshot.retention]\ndayly = 7\n")
    result = subprocess.run(
        [str(BIN_DIR / "backupd"), "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78
    assert "snapshot.retention.dayly = 7: unknown key" in result.stderr
    assert not list(tmp_path.glob("*.sock"))  # offline: nothing created


def test_missing_config_file_is_78(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN_DIR / "backupd"), "check-config", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78
    assert "cannot read" in result.stderr
