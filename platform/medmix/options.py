"""The vocabulary every config section is written in: `option(...)` and `ConfigError`.

Kept apart from `medmix.config` (which composes the sections into `MedmixConfig`) so that a
section module imports only this, and the root config can import every section without a
cycle.

    @dataclass
    class TrainConfig:
        lr: float = option(3e-4, "peak learning rate", gt=0)
        weights: dict[str, float] = map_option("task -> weight")   # replaced whole on merge
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

# How a preset that `extends` another, or a sweep trial's overrides, combine a field:
# "merge" walks into tables key by key; "replace" takes the child's table whole.
MERGE = "merge"
REPLACE = "replace"


class ConfigError(ValueError):
    """A configuration problem, always naming the key path and what would be valid."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, choices: tuple | None = None, merge: str = MERGE) -> Any:
    """A config field with its one-line meaning and the range of valid values."""
    if merge not in (MERGE, REPLACE):
        raise ValueError(f"merge must be {MERGE!r} or {REPLACE!r}, got {merge!r}")
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "merge": merge}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def map_option(help: str, **bounds: Any) -> Any:
    """A free-form `key -> value` table (task -> weight). A child preset replaces it whole:
    a parent's `cxr_report = 0.6` must not survive into a child's explicit mixture."""
    return option(default_factory=dict, help=help, merge=REPLACE, **bounds)


def replaces_whole(f: dataclasses.Field) -> bool:
    return f.metadata.get("merge") == REPLACE


def validate(section: Any, prefix: str = "") -> None:
    """Check every field's range/choices of a config dataclass (the root or one section), then
    the section's own `validate()` if it has one; errors name the key path under `prefix`."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            validate(value, key + ".")
            continue
        meta = f.metadata
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None:
                continue
            if meta.get("choices") and v not in meta["choices"]:
                raise ConfigError(f"{key} = {v!r} is not one of {', '.join(map(str, meta['choices']))}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                for bound, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                        ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                    limit = meta.get(bound)
                    if limit is not None and not ok(v, limit):
                        raise ConfigError(f"{key} = {v!r} is out of range: must be {word} {limit}")
    check = getattr(section, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(prefix) or not prefix else f"{prefix.rstrip('.')}: {msg}") from None
