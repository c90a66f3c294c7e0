"""Man pages backupd(8), backupctl(8) and backupd.toml(5) in roff, from the sources of `--help`.

The command pages walk the argparse parsers of backupd/cli.py and backupd/ctl.py (with the
examples of backupd/cli_help.py); the config page walks the config model like
docs/configuration.md does. `python -m backupd.manpage packaging/man` rewrites the committed
pages; tests/unit/test_admin_files.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import BaseModel

from backupd import __version__, cli, ctl
from backupd.cli_help import EXAMPLES, options, subcommands, write_files
from backupd.config import Config
from backupd.config_reference import EXAMPLE, example_comments, limits, sections, toml_value
from backupd.config_reference import type_name as markdown_type

EXIT_STATUS = (
    ("0", "success"),
    ("1", "failed"),
    ("2", "usage error"),
    ("3", "daemon unreachable (backupctl)"),
    ("4", "unhealthy (backupctl status, probe)"),
    ("5", "permission denied (backupctl)"),
    ("78", "invalid configuration (EX_CONFIG)"),
)
FILES = (
    ("/etc/backupd/backupd.toml", "the configuration, see backupd.toml(5)"),
    ("/etc/backupd/my.cnf", "MySQL client option file with the backupd account (mode 0600)"),
    (
        "/etc/default/backupd",
        "environment for the unit on Debian and Ubuntu (credentials, endpoints)",
    ),
    ("/etc/sysconfig/backupd", "the same on Amazon Linux and RHEL"),
    ("/run/backupd/control.sock", "the control socket backupctl talks to"),
    ("/var/lib/backupd", "state: binlog archive position, spool"),
    ("/var/cache/backupd/restore", "restore work directory: the verified object cache"),
)
SEE_ALSO = "backupd(8), backupctl(8), backupd.toml(5), systemctl(1), mariadb\\-binlog(1)"
DOCS = "/usr/share/doc/backupd"


def escape(text: str) -> str:
    """Text safe in roff: backslashes and dashes escaped, no line starting with a control dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in ".'" else line for line in text.splitlines())


def header(name: str, section: int, title: str) -> list[str]:
    kind = "File Formats" if section == 5 else "System Administration"
    return [
        f'.TH {escape(name.upper())} {section} "" "backupd {__version__}" "{kind}"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(title)}",
    ]


def option_lines(parser: argparse.ArgumentParser, shown: frozenset[str] = frozenset()) -> list[str]:
    """One tagged paragraph per option, except those already listed (`shown`)."""
    out = []
    for action in options(parser):
        if action.help == argparse.SUPPRESS or shown & set(action.option_strings):
            continue
        flags = ", ".join(f"\\fB{escape(flag)}\\fR" for flag in action.option_strings)
        if action.nargs != 0:
            flags += f" \\fI{escape(str(action.metavar or action.dest).upper())}\\fR"
        out += [".TP", flags, escape(action.help or "")]
    return out


def example_lines(path: str) -> list[str]:
    if path not in EXAMPLES:
        return []
    out = [".PP", "Example:", ".PP", ".RS 4", ".nf"]
    out += [escape(line) for line in EXAMPLES[path]]
    return [*out, ".fi", ".RE"]


def command_page(
    parser: argparse.ArgumentParser, title: str, summary: str, environment: list[str]
) -> str:
    prog = parser.prog
    out = header(prog, 8, title)
    out += [".SH SYNOPSIS", f"\\fB{prog}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]"]
    out += [".SH DESCRIPTION", escape(summary)]
    out += [".SH OPTIONS", *option_lines(parser)]
    out += [".SH COMMANDS", "Each command also accepts the options above, and \\fB\\-h\\fR."]
    shown = frozenset(flag for action in options(parser) for flag in action.option_strings)
    for path, sub, help_text in subcommands(parser):
        out += [f'.SS "{escape(path.removeprefix(prog + " "))}"', escape(help_text)]
        out += option_lines(sub, shown) + example_lines(path)
    out += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", escape(meaning)]
    out += [*environment, ".SH FILES"]
    for path, meaning in FILES:
        out += [".TP", f"\\fI{escape(path)}\\fR", escape(meaning)]
    out += [".SH SEE ALSO", SEE_ALSO + ";", escape(f"{DOCS}/INTERFACE.md, {DOCS}/operations.md")]
    return "\n".join(out) + "\n"


def environment_section() -> list[str]:
    return [
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBBACKUPD_\\fISECTION\\fB__\\fIKEY\\fR",
        escape("overrides a config key, e.g. BACKUPD_STORAGE__URL; see backupd.toml(5)."),
        ".TP",
        "\\fBAWS_REGION\\fR, \\fBAWS_ACCESS_KEY_ID\\fR, \\fBAWS_SECRET_ACCESS_KEY\\fR",
        escape(
            "AWS credentials and region when no instance role is used; the unit reads them "
            "from /etc/default/backupd or /etc/sysconfig/backupd."
        ),
    ]


def plain_type(annotation: object) -> str:
    return markdown_type(annotation).replace("`", "")


def config_page() -> str:
    comments = example_comments(EXAMPLE.read_text())
    out = header("backupd.toml", 5, "configuration file of backupd(8)")
    out += [".SH SYNOPSIS", "/etc/backupd/backupd.toml"]
    out += [
        ".SH DESCRIPTION",
        escape(
            "The configuration of backupd(8) and backupctl(8), in TOML. Every section rejects "
            "unknown keys. Every key can be overridden from the environment as "
            "BACKUPD_<SECTION>__<KEY> (nested sections joined by __). "
            "`backupd check-config` checks a file offline. A key's default applies when it is "
            "absent."
        ),
    ]
    for section, model in sections(Config):
        out += [f'.SH "[{escape(section)}]"']
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                continue
            kind = plain_type(annotation)
            if bound := limits(field):
                kind += f" ({bound})"
            default = toml_value(field.get_default(call_default_factory=True))
            out += [".TP", f"\\fB{escape(name)}\\fR = \\fI{escape(default)}\\fR"]
            meaning = comments.get(f"{section}.{name}", "")
            out += [escape(f"{meaning} Type: {kind}.".strip())]
    out += [".SH FILES", ".TP", "\\fI/etc/backupd/backupd.toml\\fR", "the default location"]
    out += [".SH SEE ALSO", SEE_ALSO + ";", escape(f"{DOCS}/configuration.md")]
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """File name -> roff text of every page."""
    return {
        "backupd.8": command_page(
            cli.build_parser(),
            "consistent snapshots and continuous binlog archiving for MySQL/MariaDB",
            "backupd runs on the database host under systemd: it takes application-consistent "
            "EBS snapshots on a schedule (commits blocked for milliseconds, filesystems never "
            "left frozen), streams the binary log into compressed, checksummed objects in S3, "
            "and serves backupctl(8) on a local Unix socket and Prometheus metrics over HTTP.",
            environment_section(),
        ),
        "backupctl.8": command_page(
            ctl.build_parser(),
            "control backupd and restore to a point in time",
            "backupctl talks to backupd(8) over its control socket (status, snapshots, the "
            "binlog archive) and restores without a daemon, from the backup repository alone. "
            "--json prints the stable JSON document of the control API.",
            environment_section(),
        ),
        "backupd.toml.5": config_page(),
    }


def main(argv: list[str] | None = None) -> int:
    """Write every page into the directory given (default: packaging/man)."""
    return write_files(pages(), sys.argv[1:] if argv is None else argv, "packaging/man")


if __name__ == "__main__":
    sys.exit(main())
