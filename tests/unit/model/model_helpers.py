"""Tiny models and batches for the model tests: the debug scale at 32 px, a 64-id vocabulary.

Imported by the test modules beside it (`from model_helpers import ...`)."""

from __future__ import annotations

import dataclasses

import torch

VOCAB = 64
IMG = 63  # the <img> id
PAD = 0
BOS = 1
EOS = 2


def tiny_config(**changes):
    """The debug preset's ModelConfig at 32 px (a 2x2 patch grid), 4 image tokens per image."""
    from medmix.config import load_config
    cfg = load_config("debug").model
    return dataclasses.replace(cfg, **({"image_size": 32, "num_image_tokens": 4} | changes))


def build_tiny(seed: int = 0, **changes):
    from medmix.model import build_model
    torch.manual_seed(seed)
    return build_model(tiny_config(**changes), vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD)


def pixels(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def img(k: int = 1, t: int = 4) -> list[int]:
    """k images' worth of <img> ids."""
    return [IMG] * (t * k)


def right_pad(rows: list[list[int]], targets: list[int] | None = None):
    """(input_ids, attention_mask, labels) with labels only on the last `targets[i]` tokens."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        k = targets[i] if targets else 0
        if k:
            labels[i, len(r) - k:len(r)] = torch.tensor(r[len(r) - k:])
    return ids, mask, labels
