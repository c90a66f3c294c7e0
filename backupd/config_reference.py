"""Generate docs/configuration.md from the config model and the example's key comments.

Types, defaults, limits and allowed values come from `backupd.config.Config`; the one-line
meaning of each key is the comment above it in config/backupd.example.toml (a unit test
already requires one there). Run `python -m backupd.config_reference > docs/configuration.md`;
tests/unit/test_config_reference.py fails when the file is out of date.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from backupd.config import Config
from backupd.config_keys import env_name

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "backupd.example.toml"
_LIMITS = ((Gt, ">", "gt"), (Ge, ">=", "ge"), (Lt, "<", "lt"), (Le, "<=", "le"))


def example_comments(text: str) -> dict[str, str]:
    """`section.key` -> the comment lines right above that key in the example."""
    comments: dict[str, str] = {}
    section = ""
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if header := re.fullmatch(r"\[([a-z0-9_.]+)\]", stripped):
            section, pending = header.group(1), []
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif key := re.match(r"([a-z0-9_]+)\s*=", stripped):
            comments[f"{section}.{key.group(1)}"] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in get_args(annotation))
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"table of {type_name(get_args(annotation)[1])}"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in get_args(annotation))
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def limits(field: FieldInfo) -> str:
    found = []
    for item in field.metadata:
        for kind, symbol, attribute in _LIMITS:
            if isinstance(item, kind):
                found.append(f"{symbol} {getattr(item, attribute)}")
    return ", ".join(found)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value)


def leaves(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield f"{prefix}{name}", annotation
            yield from sections(annotation, f"{prefix}{name}.")


def render() -> str:
    comments = example_comments(EXAMPLE.read_text())
    out = [
        "# Configuration reference",
        "",
        "Generated from the config model (`backupd/config.py`) and the comments in",
        "`config/backupd.example.toml` by `python -m backupd.config_reference >"
        " docs/configuration.md`;",
        "a test fails when this file is out of date. Do not edit by hand.",
        "",
        "The file is TOML, `/etc/backupd/backupd.toml` by default. Every section rejects unknown",
        "keys. Every key can be overridden from the environment as",
        "`BACKUPD_<SECTION>__<KEY>` (nested sections joined by `__`). Check a file with",
        "`backupd check-config --config PATH` (exit 78 names every bad key).",
        "",
        'Types are strict: a boolean is `true` or `false` (never `"yes"`, `"off"` or `1`), a',
        "number is unquoted, a string is quoted. Environment values are read as TOML too",
        "(`BACKUPD_SNAPSHOT__MOUNTS='[\"/data\"]'`), except that a key holding a string takes",
        "the text as it is. A `BACKUPD_` variable that contains `__`, starts with a section name",
        "(`BACKUPD_STORAGE_URL`) or is one typo away from a key's variable must name a key: an",
        "error names the closest one. Each problem is one line with the key, the value given",
        "(secrets masked) and the fix.",
        "",
        "*default* is what applies when a key is absent; the packaged example",
        "(`/etc/backupd/backupd.toml`) sets some keys differently, e.g. `mysql.socket`.",
    ]
    for section, model in sections(Config):
        out += [
            "",
            f"## [{section}]",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                continue
            path = f"{section}.{name}"
            kind = type_name(annotation)
            if bound := limits(field):
                kind += f" ({bound})"
            default = field.get_default(call_default_factory=True)
            env = env_name(path)
            meaning = comments.get(path, "").replace("|", "\\|")
            cell = f"{meaning} (env `{env}`)" if meaning else f"env `{env}`"
            out.append(f"| `{name}` | {kind} | `{toml_value(default)}` | {cell} |")
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
