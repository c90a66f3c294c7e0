"""Build the project's packages (packaging/deb/build.sh, packaging/rpm/build.sh) for tests.

Always from a fresh copy of the repository's files (tracked and new, no .venv, no caches), as
an operator's fresh clone: the build scripts must need no `make deps` first.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fresh_clone(dest: Path) -> Path:
    """Copy the files a clone of the working tree would hold into `dest`."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert not (dest / ".venv").exists()
    return dest


def build_package(script: str, out: Path) -> Path:
    """Run packaging/<script> of a fresh copy into `out`; the path of the package it printed."""
    clone = fresh_clone(out / "clone")
    try:
        result = subprocess.run(
            [str(clone / "packaging" / script), str(out)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])
