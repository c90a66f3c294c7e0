"""One description line and an example for every subcommand of `backupd` and `backupctl`.

`--help`, the man pages (backupd/manpage.py) and the shell completions (backupd/completion.py)
all read the argparse parsers, and walk them with `subcommands`, so the three never disagree.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

# "program command [subcommand]" -> example command lines shown under "example:" in --help.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "backupd run": ("backupd run --config /etc/backupd/backupd.toml",),
    "backupd check-config": ("backupd check-config --config /etc/backupd/backupd.toml",),
    "backupd thaw-all": ("backupd thaw-all --config /etc/backupd/backupd.toml",),
    "backupctl status": ("backupctl status --json",),
    "backupctl probe": ("backupctl probe",),
    "backupctl check": ("backupctl check --config /etc/backupd/backupd.toml",),
    "backupctl snapshot": ("backupctl snapshot --wait --timeout 7200",),
    "backupctl snapshots": ("backupctl snapshots --json",),
    "backupctl prune": ("backupctl prune --dry-run",),
    "backupctl binlog": ("backupctl binlog status",),
    "backupctl binlog status": ("backupctl binlog status --json",),
    "backupctl binlog fetch": (
        "backupctl binlog fetch --dest /tmp/binlogs --from mysql-bin.000040 --to mysql-bin.000042",
    ),
    "backupctl restore": ("backupctl restore plan --to 2026-11-26T10:15:00Z",),
    "backupctl restore plan": ("backupctl restore plan --to 2026-11-26T10:15:00Z",),
    "backupctl restore replay": (
        "backupctl restore replay --to 2026-11-26T10:15:00Z"
        " --target-socket /run/backupd-restore.sock",
    ),
    "backupctl restore volumes": (
        "backupctl restore volumes --to latest --availability-zone eu-west-1a"
        " --instance-id i-0123456789abcdef0 --device /dev/sdf",
    ),
    "backupctl restore cache": ("backupctl restore cache --clear",),
    "backupctl drill": (
        "backupctl drill --to latest",
        "backupctl drill --before 0-1-4242",
        "backupctl drill --to latest --skip 0-1-4242",
        "backupctl drill --before 0-1-4242 --tables shop.orders --dump /tmp/orders.sql",
    ),
    "backupctl verify": ("backupctl verify --sample 100",),
    "backupctl undo": ("backupctl undo 0-1-4242 --print > undo-0-1-4242.sql",),
}


def subcommands(
    parser: argparse.ArgumentParser, prefix: str | None = None
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(`prog command sub`, parser, one-line help) for every subcommand, depth first."""
    prefix = prefix or parser.prog
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            path = f"{prefix} {name}"
            yield path, sub, helps.get(name, "")
            yield from subcommands(sub, path)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's own options (flags), without positionals and subcommand tables."""
    return [action for action in parser._actions if action.option_strings]


def epilog(path: str) -> str:
    lines = EXAMPLES.get(path, ())
    return "example:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""


def document(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give each subcommand its help line as description and its example as epilog."""
    for path, sub, help_text in subcommands(parser):
        sub.description = sub.description or (help_text[:1].upper() + help_text[1:] + ".")
        sub.epilog = epilog(path) or sub.epilog
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def write_files(texts: dict[str, str], argv: list[str], default_dir: str) -> int:
    """The generators' main: write each generated file into argv[0] (or `default_dir`)."""
    out = Path(argv[0] if argv else default_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_text(text)
    return 0
