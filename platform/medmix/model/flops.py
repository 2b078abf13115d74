"""Training FLOPs of the model's parts, for MFU: the formulas `medmix model info` and the trainer use.

FLOPs follow the convention of STACK-NOTES' bare references (PaLM appendix B), so platform
and bare MFU compare like for like: training FLOPs per token = 6 N + 12 L H T, where N counts
the parameters that take part in matmuls (the input embedding is a lookup, so it is left out;
the output head counts even when tied), L layers, H hidden width, T sequence length. The ViT
is counted the same way per image, with its patches (plus class token) as the sequence; a
frozen ViT costs its forward only (2 N + 4 L H T per token).
"""

from __future__ import annotations

import torch
from torch import nn


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
    """FLOPs to encode one image through the tower and project it (x3 for backward when trained)."""
    vision = model.vision
    n_vit = vision.matmul_params()
    seq = vision.num_patches + max(vision.num_prefix_tokens, 0)
    fwd_vit = 2.0 * n_vit * seq + 4.0 * vision.num_layers * vision.embed_dim * seq * seq
    fwd_proj = 2.0 * _numel(model.projector.parameters()) * model.num_image_tokens
    vit_mult = 3.0 if train and not model.freeze_vision else 1.0
    return vit_mult * fwd_vit + (3.0 if train else 1.0) * fwd_proj
