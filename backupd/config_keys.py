"""The config's keys as names: dotted paths, their environment variables, the closest match.

One home for "which keys exist and what is each one called from the environment", asked by the
loader (which variable sets which key), the error messages (did you mean ...?) and the
generated reference.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from backupd.config import Config

ENV_PREFIX = "BACKUPD_"


def env_name(path: str) -> str:
    """`snapshot.retention.daily` -> `BACKUPD_SNAPSHOT__RETENTION__DAILY`."""
    return ENV_PREFIX + path.upper().replace(".", "__")


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def key_paths(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Every leaf key as a dotted path, in model order."""
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            yield from key_paths(field.annotation, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{name}"


def section_names() -> list[str]:
    return [name for name, f in Config.model_fields.items() if _is_section(f.annotation)]


def section_at(parts: Sequence[str | int]) -> type[BaseModel] | None:
    """The section model at a path of names (None when the path leaves the sections)."""
    model: type[BaseModel] = Config
    for part in parts:
        field = model.model_fields.get(str(part))
        if field is None or not _is_section(field.annotation):
            return None
        model = field.annotation  # type: ignore[assignment]
    return model


def annotation_at(parts: Sequence[str]) -> Any | None:
    """The type of the value a path sets: a key's, a whole section's (a model), or one entry's
    of a table key (a path one below it); None when the path names nothing."""
    if not parts:
        return None
    section = section_at(parts[:-1])
    field = section.model_fields.get(parts[-1]) if section is not None else None
    if field is not None:
        return field.annotation
    table = section_at(parts[:-2]) if len(parts) > 1 else None
    field = table.model_fields.get(parts[-2]) if table is not None else None
    if field is not None and get_origin(field.annotation) is dict:
        return get_args(field.annotation)[1]
    return None


def closest(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    return matches[0] if matches else None
