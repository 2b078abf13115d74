"""Model sizes and FLOPs, computed on the meta device (no memory): what `medmix model info` prints.

    info = describe(cfg.model, vocab_size=4096, seq_len=256)
    info["params"]            # {"vision": ..., "projector": ..., "decoder": ..., "total": ...}
    info["flops_per_token"]   # training FLOPs per decoder token, for MFU
    rows = ladder(cfg.model, vocab_size=4096, seq_len=256)   # one row per named scale
    t = trainable_summary(cfg.model, cfg.train.trainable, cfg.train.lora, vocab_size=4096, world_size=8)
    t["optimizer_bytes_per_gpu"]   # AdamW moments of the trainable parameters, FSDP-sharded

The FLOP formulas themselves are in `flops.py`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from medmix.model.config import SCALES, LoraConfig, ModelConfig
from medmix.model.multimodal import build_model
from medmix.model.scales import language_scale_name, vision_scale_name
from medmix.model.trainable import apply_lora_structure, apply_trainable


def build_on_meta(cfg: ModelConfig, vocab_size: int):
    """The model `cfg` describes with meta tensors: shapes only, no memory, no weights read."""
    with torch.device("meta"):
        return build_model(cfg, vocab_size=vocab_size, image_token_id=vocab_size - 1,
                           pad_token_id=0, load_pretrained=False)


def describe(cfg: ModelConfig, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """Parameter counts per part, decoder shape and FLOPs of the model `cfg` describes."""
    model = build_on_meta(cfg, vocab_size)
    dc = model.decoder.config
    vis = model.vision
    per_token = model.flops_per_token(seq_len)
    per_image = model.flops_per_image()
    return {
        "vision_scale": "pretrained" if cfg.vision_path else ("timm" if cfg.vision_timm else vision_scale_name(cfg)),
        "language_scale": "pretrained" if cfg.decoder_path else language_scale_name(cfg),
        "params": model.num_params(),
        "vision_shape": f"{type(getattr(vis, 'tower', getattr(vis, 'vit', vis))).__name__} d{vis.embed_dim} "
                        f"x{vis.num_layers} p{vis.patch_size} @{cfg.image_size}px ({vis.num_patches} patches"
                        f"{'' if cfg.vision_feature_layer == -1 else f', layer {cfg.vision_feature_layer}'})",
        "decoder_shape": f"{dc.hidden_size} x {dc.num_hidden_layers} layers, heads "
                         f"{dc.num_attention_heads}/{dc.num_key_value_heads}, vocab {dc.vocab_size}",
        "vocab_size": dc.vocab_size,
        "seq_len": seq_len,
        "flops_per_token": per_token,
        "flops_per_image": per_image,
        # one image per sequence, spread over its tokens: what a VQA-style batch costs
        "flops_per_token_1img": per_token + per_image / seq_len,
    }


ADAM_BYTES_PER_PARAM = 8
"""AdamW keeps two fp32 moments (exp_avg, exp_avg_sq) per trainable parameter."""


def trainable_summary(cfg: ModelConfig, trainable: str, lora: LoraConfig, *, vocab_size: int,
                      world_size: int) -> dict[str, Any]:
    """Trainable and frozen parameter counts under `trainable` (train.trainable), and what the
    optimizer state, gradients and fp32 weights take per GPU when FSDP2 shards them over
    `world_size` ranks. Raises ConfigError for a LoRA target or glob that matches nothing."""
    model = build_on_meta(cfg, vocab_size)
    with torch.device("meta"):  # adapters too: shapes only
        report = apply_trainable(model, trainable, lora)
    total = report.trainable + report.frozen
    return {
        "trainable": report.trainable, "frozen": report.frozen, "total": total,
        "per_part": {k: {"trainable": t, "frozen": f} for k, (t, f) in report.per_part.items()},
        "lora_modules": report.lora_modules, "world_size": world_size,
        "optimizer_bytes_per_gpu": ADAM_BYTES_PER_PARAM * report.trainable / world_size,
        "grad_bytes_per_gpu": 4 * report.trainable / world_size,
        "param_bytes_per_gpu": 4 * total / world_size,
    }


def parameter_names(cfg: ModelConfig, vocab_size: int, trainable: str, lora: LoraConfig) -> list[tuple[str, tuple]]:
    """(name, shape) of every parameter, adapters included: what `train.trainable` globs match."""
    model = build_on_meta(cfg, vocab_size)
    with torch.device("meta"):
        apply_lora_structure(model, trainable, lora)
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def ladder(cfg: ModelConfig, vocab_size: int, seq_len: int) -> list[dict[str, Any]]:
    """`describe` for every named scale (vision and language at the same scale, no pretrained)."""
    rows = []
    for name in SCALES:
        c = dataclasses.replace(cfg, scale=name, vision_scale="", language_scale="", vision_timm="", vision_path="",
                                vision_feature_layer=-1,
                                decoder_path="", vision_checkpoint="")
        rows.append({"scale": name, **describe(c, vocab_size, seq_len)})
    return rows


def human(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    if n == 0:
        return "0"
    units = ["", "K", "M", "B", "T", "P"]
    k = min(int(math.log10(abs(n)) // 3), len(units) - 1)
    return f"{n / 10 ** (3 * k):.{1 if k else 0}f}{units[k]}"
