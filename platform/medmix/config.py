"""The root config: `MedmixConfig`, TOML presets, `--set a.b=c` overrides, printing.

Every component declares its own `@dataclass XConfig` beside the code it builds, written with
`medmix.options.option`; this module declares the root as those sections and knows how to
load, override, validate and print it. Precedence: dataclass defaults < preset TOML (which may
`extends` another preset) < `--set`.

    cfg = load_config("debug", overrides=["train.steps=20", "mixture.mode=random"])
    print(to_toml(cfg))      # what `--dry-run` shows

All validation happens here, before any work starts: an unknown key, a wrong type or an
out-of-range value raises `ConfigError` naming the full key path (`train.lr`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medmix.data.config import MixtureConfig, StoreConfig, StreamConfig, TokenizerConfig
from medmix.data.synth.config import SynthConfig
from medmix.evaluate.config import EvalConfig
from medmix.lineage.config import TrackerConfig
from medmix.model.config import ModelConfig
from medmix.options import ConfigError, option, replaces_whole, validate
from medmix.serve.config import ServeConfig
from medmix.train.config import DebugConfig, TrainConfig
from medmix.tune.config import SweepConfig

__all__ = ["MedmixConfig", "ConfigError", "option", "validate", "load_config", "to_toml", "to_dict",
           "flatten", "config_from_dict", "config_from_toml_text", "list_presets", "read_preset"]

PRESET_DIR = "presets"


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"help": (cls.__doc__ or "").strip().splitlines()[0]})


@dataclass
class MedmixConfig:
    """The whole resolved configuration of one medmix job."""

    name: str = option("medmix", "run name: MLflow run and Ray Train run directory")
    seed: int = option(0, "global seed: data plan, model init, sampling", ge=0)
    data: StoreConfig = _section(StoreConfig)
    synth: SynthConfig = _section(SynthConfig)
    tokenizer: TokenizerConfig = _section(TokenizerConfig)
    mixture: MixtureConfig = _section(MixtureConfig)
    stream: StreamConfig = _section(StreamConfig)
    model: ModelConfig = _section(ModelConfig)
    train: TrainConfig = _section(TrainConfig)
    lineage: TrackerConfig = _section(TrackerConfig)
    debug: DebugConfig = _section(DebugConfig)
    sweep: SweepConfig = _section(SweepConfig)
    serve: ServeConfig = _section(ServeConfig)
    eval: EvalConfig = _section(EvalConfig)


# --- presets -----------------------------------------------------------------------------

def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("medmix").joinpath(PRESET_DIR).iterdir()
                  if p.name.endswith(".toml"))


def read_preset(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict:
    """Return the preset as a nested dict, with `extends` chains merged (child wins)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        text, where = path.read_text(), str(path)
    else:
        res = resources.files("medmix").joinpath(PRESET_DIR, f"{name_or_path}.toml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {name_or_path!r}; shipped presets: "
                              f"{', '.join(list_presets())} (or give a path to a .toml file)")
        text, where = res.read_text(), f"preset {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from exc
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if parent in _seen:
        raise ConfigError(f"{where}: `extends` cycle through {parent!r}")
    return deep_merge(read_preset(parent, _seen + (name_or_path,)), data)


def deep_merge(base: dict, over: dict, cls: type | None = MedmixConfig) -> dict:
    """`over` on top of `base`, table by table. A field declared `merge="replace"` (a free-form
    map such as `mixture.weights`) is taken whole from `over`; `cls` is the dataclass the
    tables describe, so the rule comes from the field's metadata, never from its name."""
    fields, hints = _schema(cls)
    out = dict(base)
    for key, value in over.items():
        f = fields.get(key)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not (f and replaces_whole(f)):
            out[key] = deep_merge(out[key], value, _sub_dataclass(hints.get(key)))
        else:
            out[key] = value
    return out


def _schema(cls: type | None) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    if cls is None:
        return {}, {}
    return {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)


def _sub_dataclass(tp: Any) -> type | None:
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


# --- overrides ---------------------------------------------------------------------------

def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], value); the value is TOML if it parses, else a bare string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = json.loads(json.dumps(data))  # deep copy of plain TOML data
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


# --- building and validating -------------------------------------------------------------

def load_config(preset: str | None = "debug", overrides: list[str] | None = None) -> MedmixConfig:
    """defaults < preset < overrides, validated; raises ConfigError naming the key path."""
    data = read_preset(preset) if preset else {}
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(MedmixConfig, data, "")
    validate(cfg)
    return cfg


def from_dict(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; valid keys in "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        moved = RETYPED.get(prefix + name)
        if moved and isinstance(value, moved[0]):
            raise ConfigError(f"{prefix}{name} = {value!r}: {moved[1]}")
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


# keys whose value changed type: the old form gets an error that says where it went
RETYPED: dict[str, tuple[type, str]] = {
    "sweep.objective": (dict, "sweep.objective now names the aggregate (mean_normalised, worst_task, "
                              "weighted or loss); a metric -> weight table goes in sweep.objective_metrics, "
                              "with sweep.objective = \"loss\""),
}


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in typing.get_args(tp):
                return None
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return {str(k): _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")


# --- printing ----------------------------------------------------------------------------

def to_dict(cfg: MedmixConfig) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg: MedmixConfig | dict, cls: type | None = MedmixConfig) -> dict[str, Any]:
    """`{"train.lr": 3e-4, ...}` — what MLflow records as params. Takes a config or its dict;
    a map field (`mixture.weights`) stays one value, as it is one setting."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str, cls: type | None) -> None:
        fields, hints = _schema(cls)
        for key, value in node.items():
            f = fields.get(key)
            if isinstance(value, dict) and not (f and replaces_whole(f)):
                walk(value, f"{prefix}{key}.", _sub_dataclass(hints.get(key)))
            else:
                out[prefix + key] = value
    walk(cfg if isinstance(cfg, dict) else to_dict(cfg), "", cls if isinstance(cfg, dict) else type(cfg))
    return out


def to_toml(cfg: MedmixConfig) -> str:
    """The resolved config as TOML, each field preceded by its one-line meaning."""
    lines: list[str] = [f"# {type(cfg).__doc__}"]
    top: list[dataclasses.Field] = []
    sections: list[dataclasses.Field] = []
    for f in dataclasses.fields(cfg):
        (sections if dataclasses.is_dataclass(getattr(cfg, f.name)) else top).append(f)
    for f in top:
        lines += _toml_field(f, getattr(cfg, f.name))
    for f in sections:
        _toml_section(getattr(cfg, f.name), f.name, lines)
    return "\n".join(lines) + "\n"


def _toml_section(node: Any, name: str, lines: list[str]) -> None:
    lines += ["", f"[{name}]"]
    doc = (type(node).__doc__ or "").strip().splitlines()
    if doc:
        lines.append(f"# {doc[0]}")
    nested = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            nested.append(f)
        elif isinstance(value, dict):
            nested.append(f)
        else:
            lines += _toml_field(f, value)
    for f in nested:
        value = getattr(node, f.name)
        if isinstance(value, dict):
            lines += ["", f"[{name}.{f.name}]"]
            if f.metadata.get("help"):
                lines.append(f"# {f.metadata['help']}")
            for k, v in value.items():
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        else:
            _toml_section(value, f"{name}.{f.name}", lines)


def _toml_field(f: dataclasses.Field, value: Any) -> list[str]:
    out = [f"# {f.metadata['help']}"] if f.metadata.get("help") else []
    if value is None:
        return out + [f"# {f.name} = (unset)"]
    return out + [f"{f.name} = {_toml_value(value)}"]


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write {value!r} as TOML")


def config_from_toml_text(text: str) -> MedmixConfig:
    """Rebuild a config from what `to_toml` wrote (checkpoints store it in medmix.json)."""
    cfg = from_dict(MedmixConfig, tomllib.loads(text), "")
    validate(cfg)
    return cfg


def config_from_dict(data: dict) -> MedmixConfig:
    cfg = from_dict(MedmixConfig, data, "")
    validate(cfg)
    return cfg
