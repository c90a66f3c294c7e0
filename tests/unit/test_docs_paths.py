"""Every repository path and `python -m` module the docs name exists: no dead references.

Links are checked by test_docs_links.py; this catches the paths written as text or code
(`backupd/config_reference.py`, `bench.restore_rto`), which a link check never sees.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "packaging" / "README.md", *sorted(ROOT.glob("docs/*.md"))]
TOP = r"(?:backupd|bench|config|systemd|packaging|docs|tests|tools|man|\.ci)"
# Not preceded by a path character: `/etc/backupd/x` or `/opt/backupd/venv` are host paths.
_PATH = re.compile(rf"(?<![\w/.~-]){TOP}/[\w./-]*")
_MODULE = re.compile(r"-m ((?:backupd|bench|tests)(?:\.\w+)+)")


def repository_paths(text: str) -> set[str]:
    """Paths under a top-level directory of this repository, trailing punctuation dropped."""
    return {match.rstrip(".-").rstrip("/") for match in _PATH.findall(text)}


def modules(text: str) -> set[str]:
    return set(_MODULE.findall(text))


def test_extraction() -> None:
    text = (
        "see `tools/config_reference.py`, backupd/binlog/ and /etc/backupd/backupd.toml; "
        "run .venv/bin/python -m bench.freeze_cost or `python -m backupd.manpage`."
    )
    assert repository_paths(text) == {"tools/config_reference.py", "backupd/binlog"}
    assert modules(text) == {"bench.freeze_cost", "backupd.manpage"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_named_paths_exist(page: Path) -> None:
    text = page.read_text()
    for path in repository_paths(text):
        assert (ROOT / path).exists() or (page.parent / path).exists(), f"{page.name}: {path}"
    for module in modules(text):
        base = ROOT / module.replace(".", "/")
        assert base.with_suffix(".py").exists() or base.is_dir(), f"{page.name}: -m {module}"
