"""The export format's files, and `ExportMeta`: the one reader of an export's `config.json`
(what `save_exported` wrote: model and decoder configs, special ids, input settings) and
`medmix.json` (the lineage `export_checkpoint` copied from the checkpoint).

Standard library and medmix's task registry only, so training, serving and the command line all
read exports through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmix.tasks.files import register_carried

FORMAT = "medmix-model"
HF_FORMAT = "hf"
"""A LlavaForConditionalGeneration directory + processor (medmix.model.hf_export)."""
HF_ADAPTER_FORMAT = "hf-adapter"
"""LoRA adapters (+ modules_to_save) for peft on a Hugging Face base."""
EXPORT_FORMATS = ("medmix", HF_FORMAT, HF_ADAPTER_FORMAT)
"""`medmix export --format` choices; "medmix" writes FORMAT."""
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LINEAGE_FILE = "medmix.json"
TOKENIZER_FILE = "tokenizer.json"

def format_name(fmt: str) -> str:
    """The name a `--format` choice's files go by (config.json's format, the registry's medmix.format tag)."""
    return FORMAT if fmt == "medmix" else fmt


_REQUIRED = ("model", "decoder_config", "vocab_size", "image_token_id", "pad_token_id", "num_image_tokens")


@dataclass(frozen=True)
class ExportLineage:
    """An export's `medmix.json`: the checkpoint it was exported from and that checkpoint's lineage."""

    run_id: str | None = None
    """The MLflow training run."""
    step: int | None = None
    checkpoint: str | None = None
    """Absolute path of the checkpoint directory."""
    parent_checkpoint: str | None = None
    store_digest: str | None = None
    task_digests: dict[str, str] | None = None
    tokenizer_digest: str | None = None
    metrics: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved training config (`medmix.config.to_dict` form)."""
    tasks: dict[str, Any] | None = None
    """Definitions of the trained tasks that are not built in (`medmix.tasks.files`)."""


@dataclass(frozen=True)
class ExportMeta:
    """Everything an export directory says about its model, read from its two JSON files."""

    model: dict[str, Any]
    """The ModelConfig (`model.*`) the weights were trained with."""
    decoder_config: dict[str, Any]
    """The decoder's own transformers config."""
    vocab_size: int
    image_token_id: int
    pad_token_id: int | None
    num_image_tokens: int
    """Image tokens per image in a prompt."""
    params: dict[str, int] | None
    """Parameters per part: vision, projector, decoder, total."""
    tied: dict[str, str]
    """{alias tensor: stored tensor} for weights shared under several names."""
    dtype: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    max_seq_len: int | None
    """Training sequence length, which prompts are fitted to."""
    image_size: int | None
    """Side of the square image the ViT sees, px, as the export recorded it."""
    image_mean: tuple[float, ...] | None
    """Per-channel mean the tower's pixels are normalised with (None = ImageNet's)."""
    image_std: tuple[float, ...] | None
    """Per-channel std, as image_mean."""
    vision_config: dict[str, Any] | None
    """A Hugging Face vision tower's own config (None for a timm tower)."""
    exemplar: bool
    config: dict[str, Any]
    """`config.json` as stored (what `load_exported` returns)."""
    lineage: ExportLineage | None
    """`medmix.json`; None for an export that did not come from a checkpoint."""

    @classmethod
    def read(cls, export_dir: str | os.PathLike) -> ExportMeta:
        """Read `config.json` and, when present, `medmix.json` from `export_dir`.

        Raises FileNotFoundError when `config.json` is missing and ValueError naming the file
        and the problem when either file is malformed.
        """
        path = Path(export_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a medmix model export (no {CONFIG_FILE})")
        data = _read_json(path)
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: format is {data.get('format')!r}, expected {FORMAT!r}")
        if _int(path, "format_version", data.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {data['format_version']} is newer than this medmix "
                             f"reads ({FORMAT_VERSION}); upgrade medmix")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(missing)}; write exports with `medmix export`")
        meta = data.get("meta") or {}
        lineage = _read_lineage(Path(export_dir) / LINEAGE_FILE)
        if lineage is not None and lineage.tasks:
            # every reader of the model (serve replicas, evaluation actors) learns the tasks it was
            # trained on that are not built in, from the export itself
            register_carried(lineage.tasks, str(Path(export_dir) / LINEAGE_FILE))
        return cls(model=_dict(path, "model", data["model"]),
                   decoder_config=_dict(path, "decoder_config", data["decoder_config"]),
                   vocab_size=_int(path, "vocab_size", data["vocab_size"]),
                   image_token_id=_int(path, "image_token_id", data["image_token_id"]),
                   pad_token_id=_opt_int(path, "pad_token_id", data["pad_token_id"]),
                   num_image_tokens=_int(path, "num_image_tokens", data["num_image_tokens"]),
                   params=data.get("params"), tied=dict(data.get("tied") or {}), dtype=str(data.get("dtype", "")),
                   bos_id=_opt_int(path, "meta.bos_id", meta.get("bos_id")),
                   eos_id=_opt_int(path, "meta.eos_id", meta.get("eos_id")),
                   pad_id=_opt_int(path, "meta.pad_id", meta.get("pad_id")),
                   max_seq_len=_opt_int(path, "meta.max_seq_len", meta.get("max_seq_len")),
                   image_size=_opt_int(path, "meta.image_size", meta.get("image_size")),
                   image_mean=_opt_floats(path, "meta.image_mean", meta.get("image_mean")),
                   image_std=_opt_floats(path, "meta.image_std", meta.get("image_std")),
                   vision_config=(_dict(path, "vision_config", data["vision_config"])
                                  if data.get("vision_config") is not None else None),
                   exemplar=bool(meta.get("exemplar", True)), config=data, lineage=lineage)

    def require(self, export_dir: str | os.PathLike, *names: str) -> tuple[int, ...]:
        """The recorded settings `names` (`eos_id`, `max_seq_len`, `image_size`, ...), in order;
        ValueError naming `export_dir`'s config.json when any was not recorded."""
        values = [getattr(self, n) for n in names]
        missing = [n for n, v in zip(names, values) if v is None]
        if missing:
            raise ValueError(f"{Path(export_dir) / CONFIG_FILE}: meta lacks {', '.join(missing)}; export the "
                             f"model with `medmix export` (it records the settings serving needs)")
        return tuple(values)

    @property
    def train_config(self) -> dict[str, Any] | None:
        """The training config from the lineage, if the export has one."""
        return self.lineage.config if self.lineage else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a JSON {type(data).__name__}, expected an object")
    return data


def _int(path: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}: {key} is {value!r}, expected an integer")
    return value


def _opt_int(path: Path, key: str, value: Any) -> int | None:
    return None if value is None else _int(path, key, value)


def _opt_floats(path: Path, key: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{path}: {key} is {value!r}, expected 3 numbers (one per channel)")
    return tuple(float(v) for v in value)


def _dict(path: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {key} is {type(value).__name__}, expected an object")
    return value


def _read_lineage(path: Path) -> ExportLineage | None:
    if not path.is_file():
        return None
    data = _read_json(path)
    return ExportLineage(run_id=data.get("run_id"), step=_opt_int(path, "step", data.get("step")),
                         checkpoint=data.get("checkpoint"), parent_checkpoint=data.get("parent_checkpoint"),
                         store_digest=data.get("store_digest"), task_digests=data.get("task_digests"),
                         tokenizer_digest=data.get("tokenizer_digest"), metrics=data.get("metrics"),
                         config=_dict(path, "config", data.get("config") or {}), tasks=data.get("tasks"))


def is_export(path: Path) -> bool:
    """Whether `path` holds an export's config and weights."""
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
