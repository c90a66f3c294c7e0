"""Read a TOML config, apply `BACKUPD_<SECTION>__<KEY>` overrides, validate, report every problem.

Reading is side-effect free, which is what makes `backupd check-config` safe to run anywhere.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backupd.config import Config
from backupd.errors import ConfigError

ENV_PREFIX = "BACKUPD_"


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
    env_sources = apply_env_overrides(data, environ)
    return validate(data, env_sources)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Merge overrides into `data` in place; return dotted path -> the variable that set it."""
    sources: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if any(not part for part in parts):
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = parse_env_value(raw)
        sources[".".join(parts)] = name
    return sources


def parse_env_value(raw: str) -> Any:
    """Read a value as TOML (numbers, booleans, arrays, tables); anything else is a string."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def validate(data: dict[str, Any], env_sources: Mapping[str, str] | None = None) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, env_sources or {})) from exc


def describe_errors(exc: ValidationError, env_sources: Mapping[str, str]) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            reason = "unknown key"
        elif error["type"] == "missing":
            reason = "required key is missing"
        else:
            reason = error["msg"].removeprefix("Value error, ")
        where = path or "(top level)"
        source = env_sources.get(path)
        if source:
            where += f" (from {source})"
        problems.append(f"{where}: {reason}")
    return problems
