"""The debug model on CUDA in bf16: forward/backward, autocast, generation with the KV cache.

    make test-gpu     # or: .venv/bin/python -m pytest -m gpu tests/gpu/test_model_gpu.py
Skipped where no CUDA GPU is present (tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

VOCAB, IMG, PAD, BOS = 256, 255, 0, 1


def build(seed: int = 0):
    import dataclasses

    from medmix.config import load_config
    from medmix.model import build_model
    cfg = dataclasses.replace(load_config("debug").model, image_size=64, num_image_tokens=4)
    torch.manual_seed(seed)
    return build_model(cfg, vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD)


def batch(device):
    rows = [[BOS, 5] + [IMG] * 4 + [6, 7, 8, 9], [BOS] + [IMG] * 8 + [10, 11]]
    width = max(map(len, rows))
    ids = torch.full((2, width), PAD)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    labels = ids.clone()
    labels[(ids == IMG) | (mask == 0)] = -100
    labels[:, :2] = -100
    g = torch.Generator().manual_seed(0)
    px = torch.randn(3, 3, 64, 64, generator=g)
    return ids.to(device), mask.to(device), labels.to(device), px.to(device)


def test_bf16_forward_backward_on_cuda():
    model = build().to("cuda", torch.bfloat16)
    ids, mask, labels, px = batch("cuda")
    out = model(ids, mask, labels=labels, pixel_values=px)  # fp32 pixels are cast to the ViT dtype
    assert out.logits.dtype == torch.bfloat16 and out.example_loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.bfloat16 for g in grads)
    assert float(model.projector.proj[0].weight.grad.abs().sum()) > 0


def test_autocast_bf16_matches_fp32_and_trains():
    model = build().to("cuda")
    ids, mask, labels, px = batch("cuda")
    ref = model(ids, mask, labels=labels, pixel_values=px).loss
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    losses = []
    for _ in range(10):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, mask, labels=labels, pixel_values=px)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss))
    assert abs(losses[0] - float(ref)) < 0.05 * float(ref)
    assert losses[-1] < losses[0]


def test_generation_with_kv_cache_on_cuda():
    from medmix.model import generate
    model = build(seed=1).to("cuda")
    px = torch.randn(1, 3, 64, 64, device="cuda")
    prompts = [[BOS] + [IMG] * 4 + [5], [BOS, 7, 8, 9, 10]]
    cached = generate(model, prompts, px, max_new_tokens=16)
    assert cached == generate(model, prompts, px, max_new_tokens=16, use_cache=False)
    sampled = generate(model, prompts, px, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=3)
    assert sampled == generate(model, prompts, px, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=3)
