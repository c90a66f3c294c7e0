"""docs/configuration.md is what backupd/config_reference.py makes from the config model now."""

from __future__ import annotations

from pathlib import Path

from backupd.config import Config
from backupd.config_reference import example_comments, leaves, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is stale: run "
        "`.venv/bin/python -m backupd.config_reference > docs/configuration.md`"
    )


def test_every_model_key_has_a_row() -> None:
    text = render()
    keys = [path for path, _ in leaves(Config, "")]
    assert len(keys) > 50
    for path in keys:
        env = "BACKUPD_" + path.upper().replace(".", "__")
        assert f"`{env}`" in text, path


def test_example_comments_belong_to_the_key_below() -> None:
    comments = example_comments(
        "# file header\n\n[a]\n# first\n# second\nx = 1\ny = 2\n\n[a.b]\n# nested\nz = []\n"
    )
    assert comments == {"a.x": "first second", "a.y": "", "a.b.z": "nested"}
