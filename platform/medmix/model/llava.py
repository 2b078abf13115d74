"""A LLaVA model directory (`LlavaForConditionalGeneration` + processor) as medmix's three parts.

    model.llava_path = "/models/llava-med"       # in a preset, or --set model.llava_path=...

sets, from the directory's `config.json`:
  - `model.vision_path`    = the directory: the tower is its `vision_config`, the weights its
                             `vision_tower.*` tensors, the pixels normalised with its processor's
                             statistics;
  - `model.projector`      = "llava" and `model.projector_path` = the directory
                             (its `multi_modal_projector.*`);
  - `model.decoder_path`   = the directory: the decoder is its `text_config` with the
                             language model's and `lm_head` tensors, and the tokenizer (with
                             its image token) is the directory's;
  - `model.image_size`, `model.num_image_tokens` (one token per patch, as LLaVA does) and
    `model.vision_feature_layer` (LLaVA's layer in medmix's numbering, below).

So the medmix model has the same weights and computes the same logits as transformers'
`LlavaForConditionalGeneration` on the same prompt and image. Each of the three keys also takes
a LLaVA directory on its own (e.g. only the decoder of a LLaVA).

Layer numbering: LLaVA indexes the tower's hidden states (0 = embeddings, -1 = the last
block's output before any final norm); medmix's `vision_feature_layer` counts blocks, with -1
meaning the tower's final output *with* its last norm. LLaVA's -1 is therefore medmix's
`num_hidden_layers`; every other index is the same number. LLaVA's
`vision_feature_select_strategy` says whether the tower's first token is dropped: "default"
fits towers with one class token (CLIP), "full" towers with none (SigLIP); medmix drops every
prefix token, so the other pairings (and several feature layers at once, a projector without
bias or with another activation) are errors naming the field.

Standard library only: `ModelConfig.validate` reads the directory's config.json through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medmix.model.paths import resolve_local_path
from medmix.options import ConfigError

LLAVA_TYPE = "llava"
PREFIX_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}
"""Tokens a tower puts before its patch grid (class token), for the towers LLaVA maps to."""
STRATEGY_FOR_PREFIX = {1: "default", 0: "full"}
"""LLaVA's vision_feature_select_strategy that keeps exactly the patch grid."""

# tensor-name prefixes of a saved LlavaForConditionalGeneration: the layout transformers writes
# (first) and the one of transformers 5's in-memory module tree (second)
VISION_KEYS = {r"^vision_tower\.": "", r"^model\.vision_tower\.": ""}
DECODER_KEYS = {r"^language_model\.model\.": "model.", r"^language_model\.lm_head\.": "lm_head.",
                r"^model\.language_model\.": "model.", r"^lm_head\.": "lm_head."}


def read_config_json(directory: Path) -> dict[str, Any] | None:
    """A model directory's config.json as a dict; None when there is none or it is not JSON."""
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_llava_dir(path: str | Path) -> bool:
    """Whether `path` is a directory holding a LLaVA (`model_type: llava`) config.json."""
    path = Path(path)
    data = read_config_json(path) if path.is_dir() else None
    return bool(data) and data.get("model_type") == LLAVA_TYPE


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def llava_settings(ref: str, key: str = "model.llava_path") -> dict[str, Any]:
    """The `model.*` values a LLaVA directory implies (see the module docstring).

    Raises ConfigError naming `key`, the directory and the field for a directory that is not a
    LLaVA model or a LLaVA medmix cannot reproduce exactly."""
    try:
        path = resolve_local_path(ref, what=key)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    data = read_config_json(path) if path.is_dir() else None
    if data is None:
        raise ConfigError(f"{key} = {ref!r}: {path} is not a Hugging Face model directory (no readable "
                          f"config.json); save the LLaVA there with save_pretrained")
    if data.get("model_type") != LLAVA_TYPE:
        raise ConfigError(f"{key} = {ref!r}: {path}/config.json has model_type {data.get('model_type')!r}, "
                          f"not 'llava'; for a separate tower or decoder use model.vision_path / "
                          f"model.decoder_path")
    vision, text = data.get("vision_config") or {}, data.get("text_config") or {}
    where = f"{key} = {ref!r} ({path}/config.json)"
    tower = vision.get("model_type", "clip_vision_model")
    if tower not in PREFIX_TOKENS:
        raise ConfigError(f"{where}: vision tower {tower!r} is not supported; medmix starts from LLaVA "
                          f"models with a CLIP or SigLIP tower ({', '.join(PREFIX_TOKENS)})")
    strategy = data.get("vision_feature_select_strategy", "default")
    if strategy != STRATEGY_FOR_PREFIX[PREFIX_TOKENS[tower]]:
        raise ConfigError(f"{where}: vision_feature_select_strategy = {strategy!r} with a {tower} tower "
                          f"keeps {'a class token' if strategy == 'full' else 'all but one patch'}; medmix "
                          f"feeds the projector the patch grid only (use "
                          f"{STRATEGY_FOR_PREFIX[PREFIX_TOKENS[tower]]!r})")
    layer = data.get("vision_feature_layer", -2)
    layers = int(vision.get("num_hidden_layers", 12))
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ConfigError(f"{where}: vision_feature_layer = {layer!r} concatenates several layers; medmix "
                          f"takes one")
    if layer == 0 or not -layers <= layer <= layers:
        raise ConfigError(f"{where}: vision_feature_layer = {layer} is not a block of the {layers}-block tower")
    act = data.get("projector_hidden_act", "gelu")
    if act != "gelu":
        raise ConfigError(f"{where}: projector_hidden_act = {act!r}; medmix's llava projector uses GELU")
    if not data.get("multimodal_projector_bias", True):
        raise ConfigError(f"{where}: multimodal_projector_bias = false; medmix's llava projector has biases")
    if not text.get("model_type"):
        raise ConfigError(f"{where}: text_config has no model_type")
    image_size, patch = _side(vision.get("image_size", 224)), _side(vision.get("patch_size", 32))
    return {"vision_path": ref, "decoder_path": ref, "projector_path": ref, "projector": "llava",
            "image_size": image_size, "num_image_tokens": (image_size // patch) ** 2,
            "vision_feature_layer": layers if layer == -1 else layer}


def llava_feature_layer(medmix_layer: int, num_layers: int) -> int:
    """medmix's `vision_feature_layer` in LLaVA's numbering (the inverse of `llava_settings`'s);
    -1 (the tower's output with its final norm) has none and stays -1 for the caller to judge."""
    return -1 if medmix_layer == num_layers else medmix_layer


__all__ = ["LLAVA_TYPE", "PREFIX_TOKENS", "STRATEGY_FOR_PREFIX", "VISION_KEYS", "DECODER_KEYS",
           "is_llava_dir", "llava_settings", "llava_feature_layer", "read_config_json"]
