"""Man pages and shell completions are what the parsers make now, and they work.

Every subcommand's `--help` has a description line and an example; the committed pages and
scripts are regenerated from the same parsers (stale ones fail here); the bash completion
answers like the parser would; man renders every page without a warning.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from backupd import cli, ctl
from backupd.cli_help import subcommands
from backupd.completion import scripts
from backupd.manpage import pages
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "packaging" / "man"
COMPLETIONS = ROOT / "packaging" / "completions"
PARSERS = [cli.build_parser(), ctl.build_parser()]


@pytest.mark.parametrize("name", sorted(pages()))
def test_man_page_is_up_to_date(name: str) -> None:
    assert (MAN / name).read_text() == pages()[name], (
        f"packaging/man/{name} is stale: run `.venv/bin/python -m backupd.manpage packaging/man`"
    )


@pytest.mark.parametrize("name", sorted(scripts()))
def test_completion_is_up_to_date(name: str) -> None:
    assert (COMPLETIONS / name).read_text() == scripts()[name], (
        f"packaging/completions/{name} is stale: run "
        "`.venv/bin/python -m backupd.completion packaging/completions`"
    )


def test_every_subcommand_has_a_description_and_an_example() -> None:
    paths = []
    for parser in PARSERS:
        for path, sub, _ in subcommands(parser):
            paths.append(path)
            help_text = sub.format_help()
            assert sub.description and "\n" not in sub.description.strip(), path
            assert "example:\n  " + parser.prog in help_text, path
    assert "backupctl restore replay" in paths
    assert "backupd check-config" in paths


@pytest.mark.parametrize("name", ["backupd.8", "backupctl.8", "backupd.toml.5"])
def test_man_renders_without_warnings(name: str) -> None:
    man = require_tool("man", "man-db")
    result = subprocess.run(
        [man, "--warnings", "-l", str(MAN / name)],
        capture_output=True,
        text=True,
        check=False,
        env={"MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    text = re.sub(".\b", "", result.stdout)  # overstrike bold and underline
    assert "NAME" in text and "SEE ALSO" in text


def complete(line: str, prog: str = "backupctl") -> list[str]:
    """What the bash completion offers for the last word of `line`."""
    words = line.split(" ")
    script = (
        f"source {COMPLETIONS / (prog + '.bash')}\n"
        f"COMP_WORDS=({' '.join(repr(word) for word in words)}); COMP_CWORD={len(words) - 1}\n"
        f"_{prog}; printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    result = subprocess.run(
        ["bash", "--norc", "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    return [word for word in result.stdout.splitlines() if word]


def test_bash_completion_is_valid_and_follows_the_parser(tmp_path: Path) -> None:
    for name in ("backupd.bash", "backupctl.bash"):
        check = subprocess.run(["bash", "-n", str(COMPLETIONS / name)], check=False)
        assert check.returncode == 0, name
    top = {path.split(" ")[1] for path, _, _ in subcommands(PARSERS[1])}
    assert set(complete("backupctl ")) == top
    assert complete("backupctl binlog ") == ["status", "fetch", "index"]
    assert complete("backupctl --json restore pl") == ["plan"]
    assert "--target-socket" in complete("backupctl restore replay --")
    assert "--wait" not in complete("backupctl restore replay --")
    (tmp_path / "backupd.toml").write_text("")
    assert complete(f"backupctl --config {tmp_path}/backupd.t") == [f"{tmp_path}/backupd.toml"]
    assert complete("backupd check", "backupd") == ["check-config"]


# zsh's completion builtins replaced by stubs that print what would be offered.
ZSH_STUBS = """
compadd() { shift; for w in ${(P)1}; do print -r -- $w; done }
_describe() { for w in ${(P)2}; do print -r -- ${w%%:*}; done }
_files() { print FILES }
"""


def zsh_complete(zsh: str, line: str) -> list[str]:
    words = line.split(" ")
    script = (
        f"{ZSH_STUBS}\nsource {COMPLETIONS / '_backupctl'} >/dev/null\n"
        f"words=({' '.join(repr(word) for word in words)}); CURRENT={len(words)}; "
        f"PREFIX={words[-1]!r}\n_backupctl\n"
    )
    result = subprocess.run(
        [zsh, "-f", "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.split()


def test_zsh_completion_parses_and_follows_the_parser() -> None:
    zsh = require_tool("zsh", "zsh")
    for name in ("_backupd", "_backupctl"):
        check = subprocess.run([zsh, "-n", str(COMPLETIONS / name)], check=False)
        assert check.returncode == 0, name
    assert zsh_complete(zsh, "backupctl binlog ") == ["status", "fetch", "index"]
    assert "--target-socket" in zsh_complete(zsh, "backupctl restore replay --")
    assert zsh_complete(zsh, "backupctl --config ") == ["FILES"]
