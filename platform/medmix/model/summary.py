"""Model sizes and FLOPs, computed on the meta device (no memory): what `medmix model info` prints.

    info = describe(cfg.model, vocab_size=4096, seq_len=256)
    info["params"]            # {"vision": ..., "projector": ..., "decoder": ..., "total": ...}
    info["flops_per_token"]   # training FLOPs per decoder token, for MFU
    rows = ladder(cfg.model, vocab_size=4096, seq_len=256)   # one row per named scale

FLOPs follow the convention of STACK-NOTES' bare references (PaLM appendix B), so platform
and bare MFU compare like for like: training FLOPs per token = 6 N + 12 L H T, where N counts
the parameters that take part in matmuls (the input embedding is a lookup, so it is left out;
the output head counts even when tied), L layers, H hidden width, T sequence length. The ViT
is counted the same way per image, with its patches (plus class token) as the sequence; a
frozen ViT costs its forward only (2 N + 4 L H T per token).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from medmix.model.config import SCALES, ModelConfig


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def decoder_matmul_params(decoder: nn.Module) -> int:
    """Decoder parameters that multiply activations: all but the input embedding, head included."""
    emb = decoder.get_input_embeddings().weight
    head = decoder.get_output_embeddings()
    total = _numel(decoder.parameters())
    head_numel = head.weight.numel() if head is not None else 0
    tied = head is not None and head.weight is emb
    return total - emb.numel() + (head_numel if tied else 0)


def decoder_flops_per_token(decoder: nn.Module, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token: 6 N + 12 layers hidden seq_len."""
    c = decoder.config
    return 6.0 * decoder_matmul_params(decoder) + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len


def image_flops(model: nn.Module, train: bool = True) -> float:
    """FLOPs to encode one image through the ViT and project it (x3 for backward when trained)."""
    vit = model.vision.vit
    skip = {id(getattr(vit, n)) for n in ("pos_embed", "cls_token", "reg_token")
            if isinstance(getattr(vit, n, None), torch.Tensor)}
    n_vit = sum(p.numel() for p in vit.parameters() if id(p) not in skip)
    seq = model.vision.num_patches + model.vision.num_prefix_tokens
    fwd_vit = 2.0 * n_vit * seq + 4.0 * len(vit.blocks) * vit.embed_dim * seq * seq
    fwd_proj = 2.0 * _numel(model.projector.parameters()) * model.num_image_tokens
    vit_mult = 3.0 if train and not model.freeze_vision else 1.0
    return vit_mult * fwd_vit + (3.0 if train else 1.0) * fwd_proj


def build_on_meta(cfg: ModelConfig, vocab_size: int):
    """The model `cfg` describes with meta tensors: shapes only, no memory, no weights read."""
    from medmix.model.multimodal import build_model
    with torch.device("meta"):
        return build_model(cfg, vocab_size=vocab_size, image_token_id=vocab_size - 1,
                           pad_token_id=0, load_pretrained=False)


def describe(cfg: ModelConfig, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """Parameter counts per part, decoder shape and FLOPs of the model `cfg` describes."""
    from medmix.model.scales import language_scale_name, vision_scale_name
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
