"""Read a TOML config, apply `BACKUPD_<SECTION>__<KEY>` overrides, validate, report every problem.

Reading is side-effect free, which is what makes `backupd check-config` safe to run anywhere.
A variable meant as an override that names no key is an error (a misspelt override silently
ignored is a config that lies); variables that do not look like overrides at all
(`BACKUPD_PYTHON`, the variables hooks and tests use) are left alone.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from backupd.config import Config
from backupd.config_keys import ENV_PREFIX, annotation_at, closest, env_name, key_paths
from backupd.config_keys import section_names as _section_names
from backupd.config_messages import MASK, EnvValue, describe_errors, is_secret
from backupd.errors import ConfigError

# A name this close to a key's variable is taken for a misspelling of it.
TYPO_CUTOFF = 0.8


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate; raise ConfigError listing every bad key by dotted path."""
    environ = os.environ if environ is None else environ
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    env_sources, env_problems = apply_env_overrides(data, environ)
    return validate(data, env_sources, env_problems)


def apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, EnvValue], list[str]]:
    """Merge overrides into `data` in place.

    Returns dotted path -> the variable that set it, and one problem per variable that
    looks like an override but names no key.
    """
    sources: dict[str, EnvValue] = {}
    problems: list[str] = []
    for name, raw in sorted(environ.items()):
        if not is_override(name):
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        annotation = annotation_at(parts) if all(parts) else None
        if annotation is None:
            problems.append(unknown_variable(name, raw))
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = parse_env_value(raw, annotation)
        sources[".".join(parts)] = EnvValue(name, raw)
    return sources, problems


def is_override(name: str) -> bool:
    """A `BACKUPD_` variable meant to set a key: it has `__`, starts with a section name, or
    is one typo away from a key's variable."""
    if not name.startswith(ENV_PREFIX):
        return False
    rest = name[len(ENV_PREFIX) :].lower()
    if "__" in rest or any(rest.startswith(f"{section}_") for section in _section_names()):
        return True
    return closest(name, key_variables(), TYPO_CUTOFF) is not None


def key_variables() -> list[str]:
    return [env_name(path) for path in key_paths()]


def unknown_variable(name: str, raw: str) -> str:
    given = MASK if is_secret(name) else shlex.quote(raw)
    near = closest(name, key_variables())
    if near is None:
        hint = "variables are BACKUPD_<SECTION>__<KEY> (see docs/configuration.md)"
    else:
        key = near[len(ENV_PREFIX) :].lower().replace("__", ".")
        hint = f"did you mean {near} ({key})?"
    return f"{name}={given}: names no config key; {hint}"


def parse_env_value(raw: str, annotation: Any = None) -> Any:
    """Read a value as TOML (numbers, booleans, arrays, tables); anything else is a string.

    A key that holds text takes the text as it is (`BACKUPD_DAEMON__SOCKET_GROUP=1000` is the
    group "1000"), or the TOML string when the value is quoted.
    """
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw
    if _holds_text(annotation) and not isinstance(value, str):
        return raw
    return value


def _holds_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    return get_origin(annotation) is Literal and all(
        isinstance(arg, str) for arg in get_args(annotation)
    )


def validate(
    data: dict[str, Any],
    env_sources: Mapping[str, EnvValue] | None = None,
    env_problems: list[str] | None = None,
) -> Config:
    problems = list(env_problems or [])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + describe_errors(exc, env_sources or {})) from exc
    if problems:
        raise ConfigError(problems)
    return config
