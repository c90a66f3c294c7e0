"""Build the project's packages (packaging/deb/build.sh, packaging/rpm/build.sh) for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_package(script: str, out: Path) -> Path:
    """Run packaging/<script> into `out`; the path of the package it printed last."""
    result = subprocess.run(
        [str(ROOT / "packaging" / script), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])
