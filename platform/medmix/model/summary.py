"""Model sizes and FLOPs, computed on the meta device (no memory): what `medmix model info` prints.

    info = describe(cfg.model, vocab_size=4096, seq_len=256)
    info["params"]            # {"vision": ..., "projector": ..., "decoder": ..., "total": ...}
    info["flops_per_token"]   # training FLOPs per decoder token, for MFU
    rows = ladder(cfg.model, vocab_size=4096, seq_len=256)   # one row per named scale

The FLOP formulas themselves are in `flops.py`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from medmix.model.config import SCALES, ModelConfig
from medmix.model.multimodal import build_model
from medmix.model.scales import language_scale_name, vision_scale_name


def build_on_meta(cfg: ModelConfig, vocab_size: int):
    """The model `cfg` describes with meta tensors: shapes only, no memory, no weights read."""
    with torch.device("meta"):
        return build_model(cfg, vocab_size=vocab_size, image_token_id=vocab_size - 1,
                           pad_token_id=0, load_pretrained=False)


def describe(cfg: ModelConfig, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """Parameter counts per part, decoder shape and FLOPs of the model `cfg` describes."""
    model = build_on_meta(cfg, vocab_size)
    dc = model.decoder.config
    vit = model.vision.vit
    per_token = model.flops_per_token(seq_len)
    per_image = model.flops_per_image()
    return {
        "vision_scale": vision_scale_name(cfg),
        "language_scale": "pretrained" if cfg.decoder_path else language_scale_name(cfg),
        "params": model.num_params(),
        "vision_shape": f"ViT d{vit.embed_dim} x{len(vit.blocks)} p{vit.patch_embed.patch_size[0]} "
                        f"@{cfg.image_size}px ({model.vision.num_patches} patches)",
        "decoder_shape": f"{dc.hidden_size} x {dc.num_hidden_layers} layers, heads "
                         f"{dc.num_attention_heads}/{dc.num_key_value_heads}, vocab {dc.vocab_size}",
        "vocab_size": dc.vocab_size,
        "seq_len": seq_len,
        "flops_per_token": per_token,
        "flops_per_image": per_image,
        # one image per sequence, spread over its tokens: what a VQA-style batch costs
        "flops_per_token_1img": per_token + per_image / seq_len,
    }


def ladder(cfg: ModelConfig, vocab_size: int, seq_len: int) -> list[dict[str, Any]]:
    """`describe` for every named scale (vision and language at the same scale, no pretrained)."""
    rows = []
    for name in SCALES:
        c = dataclasses.replace(cfg, scale=name, vision_scale="", language_scale="",
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
