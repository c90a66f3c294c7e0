"""`backupd`: the daemon (`run`) and its offline helpers (`check-config`, `thaw-all`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from backupd import __version__
from backupd.cli_help import document
from backupd.config import DEFAULT_CONFIG_PATH, Config
from backupd.config_checks import host_problems, impossible_combinations
from backupd.config_loader import load_config
from backupd.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, BackupdError, ConfigError
from backupd.freeze import thaw_all
from backupd.log import configure_logging, get_logger


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backupd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"backupd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the daemon in the foreground (systemd runs this)"),
        ("check-config", "validate the config offline; exit 78 naming every bad key"),
        ("thaw-all", "thaw every configured filesystem (already thawed is success)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML)")
    return document(parser)


def load_or_report(path: str) -> Config | None:
    """Load the config, or print every problem on stderr and return None."""
    try:
        return load_config(path)
    except ConfigError as exc:
        report(path, exc.problems)
        return None


def report(path: str, problems: list[str]) -> None:
    print(f"{path}: invalid configuration", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def check_config(path: str) -> int:
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    problems = impossible_combinations(config) + host_problems(config)
    if problems:
        report(path, problems)
        return EXIT_CONFIG
    snapshots = "" if config.snapshot.enabled else ", snapshots off"
    print(
        f"{path}: ok (storage {config.storage.url}, snapshot provider "
        f"{config.snapshot.provider}{snapshots})"
    )
    return EXIT_OK


def run_thaw_all(config: Config) -> int:
    failed = False
    for result in thaw_all(config.snapshot.mounts):
        if result.error:
            failed = True
            print(f"{result.mount}: {result.error}", file=sys.stderr)
        else:
            print(f"{result.mount}: {'thawed' if result.thawed else 'not frozen'}")
    return EXIT_FAILED if failed else EXIT_OK


def run_daemon(config: Config, path: str) -> int:
    from backupd.daemon import Daemon

    configure_logging(config.daemon.log_format, config.daemon.log_level)
    log = get_logger("main")
    try:
        return Daemon(config, path).run()
    except BackupdError as exc:
        log.error("backupd cannot start", code=exc.code, error=exc.message)
        return exc.exit_code
    except OSError as exc:
        log.error("backupd cannot start", error=str(exc))
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.command == "thaw-all":
        return run_thaw_all(config)
    if problems := impossible_combinations(config):
        report(args.config, problems)
        return EXIT_CONFIG
    return run_daemon(config, args.config)


if __name__ == "__main__":
    sys.exit(main())
