"""External tools some tests need (dpkg-deb, rpmbuild, promtool, systemd-analyze)."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_INTEGRATION = os.environ.get("BACKUPD_REQUIRE_INTEGRATION") == "1"


def require_tool(name: str, package: str) -> str:
    """Path of `name`; skip without it, or fail when CI requires integration tests."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (apt-get install {package}; see .ci/install-deps)"
        if REQUIRE_INTEGRATION:
            pytest.fail(message)
        pytest.skip(message)
    return path
