"""One line per config problem: the key, the value given (secrets masked) and the fix.

Values are echoed as TOML, because that is what the operator edits; a value that came from
the environment is echoed as the variable was set, and the fix names the variable with the
TOML form it needs (`BACKUPD_SNAPSHOT__MOUNTS='["/data"]'`).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from backupd.config_keys import closest, section_at

MASK = "***"
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TRUE_WORDS = {"yes", "y", "on", "true", "1", "enable", "enabled"}
_FALSE_WORDS = {"no", "n", "off", "false", "0", "disable", "disabled"}


class EnvValue(NamedTuple):
    """Which variable set a key, and its text exactly as it was set."""

    name: str
    raw: str


def is_secret(name: str) -> bool:
    """Key-ish, password-ish names: their values never appear in a message."""
    lowered = name.lower()
    words = re.split(r"[._]+", lowered)
    return "key" in words or any(word in lowered for word in _SECRET_WORDS)


def toml_literal(value: Any) -> str:
    """`value` written as TOML (what the operator would type into the file)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = [f"{_toml_key(key)} = {toml_literal(item)}" for key, item in value.items()]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value) if isinstance(value, int | float) else str(value)


def _toml_key(key: Any) -> str:
    return str(key) if _BARE_KEY.fullmatch(str(key)) else json.dumps(str(key))


def describe_errors(exc: ValidationError, env: Mapping[str, EnvValue]) -> list[str]:
    """Every validation error as one line; `env` maps dotted paths to the variable that set them."""
    return [describe(error, env) for error in exc.errors(include_url=False)]


def describe(error: ErrorDetails, env: Mapping[str, EnvValue]) -> str:
    loc = error["loc"]
    path = _dotted(loc)
    key = ".".join(str(part) for part in loc if isinstance(part, str))
    source = env.get(key)
    secret = is_secret(key)
    value = error["input"]
    if error["type"] == "missing":
        return f"{path or '(top level)'}: required key is missing"
    if source is not None:
        given = MASK if secret else shlex.quote(source.raw)
        head = f"{path} (from {source.name}={given})"
    elif not path or (isinstance(value, dict) and error["type"] != "extra_forbidden"):
        head = path or "(top level)"  # a rule across keys: its message names them
    else:
        head = f"{path} = {MASK if secret else toml_literal(value)}"
    reason, expected = _reason(error, loc)
    fix = "" if expected is None or secret else _fix(path, expected, source)
    return f"{head}: {reason}{fix}"


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_TYPE_REASONS = {
    "bool_type": "expected true or false (a TOML boolean, not a string or number)",
    "int_type": "expected an integer (unquoted)",
    "float_type": "expected a number (unquoted)",
    "string_type": "expected a string (in quotes)",
    "list_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table (a section)",
}


def _reason(error: ErrorDetails, loc: tuple[int | str, ...]) -> tuple[str, Any | None]:
    """Why the value is wrong, and (for type errors) the value to suggest instead."""
    kind, value = error["type"], error["input"]
    if kind == "extra_forbidden":
        section = section_at(loc[:-1])
        names = list(section.model_fields) if section is not None else []
        near = closest(str(loc[-1]), names)
        parent = ".".join(str(part) for part in loc[:-1])
        hint = f"; did you mean {parent + '.' if parent else ''}{near}?" if near else ""
        return "unknown key" + hint, None
    if kind in _TYPE_REASONS:
        guess = _suggest(kind, value)
        return _TYPE_REASONS[kind], _default(loc) if guess is None else guess
    message = error["msg"].removeprefix("Value error, ")
    return message.replace("Input should be", "must be"), None


def _suggest(kind: str, value: Any) -> Any | None:
    """The typed value the operator most likely meant (None: no good guess)."""
    text = str(value).strip()
    if kind == "bool_type":
        word = text.lower()
        return True if word in _TRUE_WORDS else False if word in _FALSE_WORDS else None
    if kind in ("int_type", "float_type"):
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if kind == "int_type" and number.is_integer() else number
    if kind == "string_type":
        return toml_literal(value) if not isinstance(value, str) else None
    if kind == "list_type":
        items = [item.strip() for item in text.split(",")] if isinstance(value, str) else []
        return [item for item in items if item] or None
    return None


def _default(loc: tuple[int | str, ...]) -> Any | None:
    """The key's default, as an example of the form it takes."""
    section = section_at(loc[:-1])
    field = section.model_fields.get(str(loc[-1])) if section is not None else None
    if field is None:
        return None
    default = field.get_default(call_default_factory=True)
    useless = isinstance(default, BaseModel) or default in ("", [], {})
    return None if useless else default


def _fix(path: str, expected: Any, source: EnvValue | None) -> str:
    literal = toml_literal(expected)
    if source is not None:
        return f"; set {source.name}={shlex.quote(literal)} (the value is read as TOML)"
    return f"; write {path.rsplit('.', 1)[-1]} = {literal}"
