"""A config that cannot lie: strict types, overrides that must name a key, impossible
combinations and host facts refused by check-config — each cause one line with key, value, fix."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from backupd.config import Config
from backupd.config_checks import host_problems, impossible_combinations
from backupd.config_loader import is_override, load_config, validate
from backupd.config_messages import toml_literal
from tests.clients import BIN_DIR
from tests.unit.test_config import problems_for


def config_of(data: dict[str, dict[str, object]]) -> Config:
    return validate(data)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[binlog]\nenabled = "yes"\n',
            'binlog.enabled = "yes": expected true or false (a TOML boolean, not a string or '
            "number); write enabled = true",
        ),
        ('[snapshot]\nenabled = "off"\n', 'snapshot.enabled = "off": expected true or false'),
        ("[binlog]\nenabled = 1\n", "binlog.enabled = 1: expected true or false"),
        ('[mysql]\nport = "3306"\n', 'mysql.port = "3306": expected an integer (unquoted); '),
        ("[mysql]\nport = 3306.0\n", "mysql.port = 3306.0: expected an integer"),
        ('[binlog]\nflush_seconds = "2.5"\n', "; write flush_seconds = 2.5"),
        (
            "[storage]\nregion = 5\n",
            'storage.region = 5: expected a string (in quotes); write region = "5"',
        ),
        ("[snapshot]\nmounts = '/data'\n", 'expected a list; write mounts = ["/data"]'),
    ],
)
def test_no_coercion_one_line_with_value_and_fix(tmp_path: Path, text: str, line: str) -> None:
    problems = problems_for(tmp_path, text)
    assert len(problems) == 1, problems
    assert line in problems[0]


def test_integers_are_numbers(tmp_path: Path) -> None:
    """TOML's `10` where a float is expected is not coercion: it is the same number."""
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\nshutdown_timeout_seconds = 10\n")
    assert load_config(path, {}).daemon.shutdown_timeout_seconds == 10.0


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"BACKUPD_BINLOG__ENABLED": "yes"},
            "binlog.enabled (from BACKUPD_BINLOG__ENABLED=yes): expected true or false (a TOML "
            "boolean, not a string or number); set BACKUPD_BINLOG__ENABLED=true",
        ),
        (
            {"BACKUPD_SNAPSHOT__MOUNTS": "/data"},
            "snapshot.mounts (from BACKUPD_SNAPSHOT__MOUNTS=/data): expected a list; "
            "set BACKUPD_SNAPSHOT__MOUNTS='[\"/data\"]'",
        ),
        (
            {"BACKUPD_BINLOG__FLUSH_SECONDS": "soon"},
            "; set BACKUPD_BINLOG__FLUSH_SECONDS=1.0",
        ),
        (
            {"BACKUPD_STORAGE_URL": "s3://bucket/db1"},
            "BACKUPD_STORAGE_URL=s3://bucket/db1: names no config key; did you mean "
            "BACKUPD_STORAGE__URL (storage.url)?",
        ),
        (
            {"BACKUPD_SNAPSHOT__RETENTON__DAILY": "3"},
            "did you mean BACKUPD_SNAPSHOT__RETENTION__DAILY (snapshot.retention.daily)?",
        ),
        ({"BACKUPD_SNAPSHOTS_ENABLED": "true"}, "did you mean BACKUPD_SNAPSHOT__ENABLED"),
    ],
)
def test_env_problems_name_the_variable_and_its_toml_form(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    problems = problems_for(tmp_path, "", env)
    assert len(problems) == 1, problems
    assert line in problems[0]


def test_variables_that_are_not_overrides_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("")
    env = {"BACKUPD_PYTHON": "/usr/bin/python3", "BACKUPD_REQUIRE_INTEGRATION": "1"}
    env |= {"BACKUPD_EVENT": "snapshot_failed", "BACKUPD_SET_ID": "x", "BACKUPD_ERROR": "e"}
    assert load_config(path, env) == Config()
    assert not any(is_override(name) for name in env)


def test_string_keys_take_the_text_as_given(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("")
    env = {
        "BACKUPD_DAEMON__SOCKET_GROUP": "1000",
        "BACKUPD_DAEMON__LOG_FORMAT": "json",
        "BACKUPD_SNAPSHOT__EBS__INSTANCE_ID": '"i-0abc"',
        "BACKUPD_SNAPSHOT__EBS__TAGS__TEAM": "42",
        "BACKUPD_SNAPSHOT__RETENTION": "{ daily = 9 }",  # a whole section, as before
    }
    config = load_config(path, env)
    assert config.daemon.socket_group == "1000"
    assert config.daemon.log_format == "json"
    assert config.snapshot.ebs.instance_id == "i-0abc"
    assert config.snapshot.ebs.tags == {"team": "42"}
    assert config.snapshot.retention.daily == 9


def test_secrets_are_masked(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path,
        "[storage]\nkms_key_id = 12345\n",
        {"BACKUPD_MYSQL__PASSWORD": "hunter2", "BACKUPD_STORAGE__SECRET_TOKEN": "s3cr3t"},
    )
    text = "\n".join(problems)
    assert "hunter2" not in text and "s3cr3t" not in text and "12345" not in text
    assert "BACKUPD_MYSQL__PASSWORD=***: names no config key" in text
    assert "storage.kms_key_id = ***: expected a string" in text


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (True, "true"),
        (3, "3"),
        (1.5, "1.5"),
        ('a"b', '"a\\"b"'),
        (["/a", "/b"], '["/a", "/b"]'),
        ({"team": "db", "cost center": 1}, '{ team = "db", "cost center" = 1 }'),
        ({}, "{}"),
    ],
)
def test_toml_literal(value: object, literal: str) -> None:
    assert toml_literal(value) == literal


def test_ebs_without_mounts_is_refused() -> None:
    problems = impossible_combinations(config_of({"snapshot": {"provider": "ebs"}}))
    assert problems == [
        'snapshot.mounts = []: snapshot.enabled = true with provider "ebs", but nothing to '
        'freeze and snapshot; list the data filesystems, e.g. mounts = ["/var/lib/mysql"], '
        "or set snapshot.enabled = false"
    ]
    assert impossible_combinations(config_of({"snapshot": {"enabled": False}})) == []


def test_drills_run_on_both_providers() -> None:
    """EBS drills create volumes on this instance (issue 11): no longer refused."""
    for provider in ("ebs", "local"):
        data: dict[str, dict[str, object]] = {
            "snapshot": {"provider": provider, "mounts": ["/data"]},
            "drill": {"enabled": True},
        }
        assert impossible_combinations(config_of(data)) == []


def test_missing_option_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "my.cnf"
    config = config_of({"mysql": {"option_file": str(missing)}})
    assert host_problems(config) == [
        f'mysql.option_file = "{missing}": no such file; without it backupd would log in '
        "with no password; create it with a [client] section (user, password), owner "
        "backupd, mode 0600"
    ]
    missing.write_text("[client]\n")
    assert host_problems(config) == []
    assert host_problems(config_of({"mysql": {"option_file": str(tmp_path)}}))  # a directory
    assert host_problems(config_of({"mysql": {"option_file": ""}})) == []  # explicitly none


def test_file_repository_on_the_database_filesystem(tmp_path: Path) -> None:
    option_file = tmp_path / "my.cnf"
    option_file.write_text("")
    config = config_of(
        {
            "mysql": {"option_file": str(option_file)},
            "storage": {"url": "file:///srv/mysql-data/backups"},
            "snapshot": {"mounts": ["/srv/mysql-data"], "provider": "local"},
        }
    )
    assert host_problems(config) == [
        'storage.url = "file:///srv/mysql-data/backups": the repository is on the '
        'database\'s filesystem (snapshot.mounts "/srv/mysql-data"), so one lost disk loses '
        "both; use s3:// or a path on another filesystem"
    ]
    (tmp_path / "mysql").mkdir()
    (problem,) = host_problems(
        config_of({"mysql": {"option_file": ""}, "storage": {"url": f"file://{tmp_path}/r"}}),
        datadir=str(tmp_path / "mysql"),  # same device, known from the server
    )
    assert "the server's datadir" in problem


def test_a_plain_directory_as_mount_is_one_line(tmp_path: Path) -> None:
    """Once six lines (root fs, then every own dir on it); one cause, one line."""
    config = config_of({"mysql": {"option_file": ""}, "snapshot": {"mounts": [str(tmp_path)]}})
    problems = host_problems(config)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f'snapshot.mounts entry "{tmp_path}": ')


def run_check_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPD_")}
    return subprocess.run(
        [str(BIN_DIR / "backupd"), "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=clean | env,
    )


def test_check_config_binary_one_line_per_cause(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[mysql]\noption_file = "{tmp_path}/none.cnf"\n'
        '[binlog]\nenabled = "yes"\n[snapshot]\nprovider = "ebs"\n'
    )
    result = run_check_config(path, BACKUPD_STORAGE_URL="s3://b/p")
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    assert [line.split(":")[0].split("=")[0].strip() for line in lines[1:]] == [
        "BACKUPD_STORAGE_URL",
        "binlog.enabled",
    ]  # the checks beyond the model run once the model loads
    path.write_text(path.read_text().replace('"yes"', "true"))
    result = run_check_config(path)
    assert result.returncode == 78
    assert [line.split(" ")[2] for line in result.stderr.splitlines()[1:]] == [
        "snapshot.mounts",
        "mysql.option_file",
    ]
