"""Tokens/s and MFU of medmix's train step against a bare torch loop of the same model.

    python benchmarks/train_step.py --scale base --seq 1024 --batch 16 --steps 20   # on a GPU
    python benchmarks/train_step.py --scale debug --seq 256 --batch 8 --steps 5     # CPU smoke

Both loops run in the same process on the same model: the *bare* loop is the reference a
systems engineer would write (autocast bf16, fused AdamW, one forward/backward/step);
the *platform* loop is the real `medmix.train.trainer.Trainer.train_step` — FSDP2 on a
one-rank process group (what each rank runs), per-example loss sums normalised by the global
target tokens, per-task sums, grad clipping, the LR schedule. MFU counts 6·N·tokens + 12·layers·hidden·seq·tokens (model.flops_per_token)
plus the ViT's FLOPs per image. Results are appended to benchmarks/RESULTS.md.
Targets (later issue): >= 45% MFU at `base` on an H100, platform >= 0.95x bare.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from datetime import date

import torch
import torch.distributed as dist

import medmix  # noqa: F401 - torchvision fix before timm
from _machine import machine, record  # benchmarks/ is on sys.path when run as a script
from medmix.config import load_config
from medmix.model import build_model
from medmix.train.fsdp import apply_fsdp
from medmix.train.metrics import gpu_peak_flops
from medmix.train.optim import build_optimizer
from medmix.train.trainer import Trainer

VOCAB, PAD, IMG = 32000, 0, 4


def synthetic_batch(cfg, batch: int, seq: int, device: torch.device) -> dict:
    """One image per row at the start, random tokens, the second half as target."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (batch, seq), generator=g)
    if seq < cfg.num_image_tokens + 8:
        raise SystemExit(f"--seq {seq} is too short for {cfg.num_image_tokens} image tokens + text")
    ids[:, 1:1 + cfg.num_image_tokens] = IMG
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device),
            "pixel_values": torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g).to(device)}


class FixedBatch:
    """The Trainer's stream for a benchmark: one batch, no validation rows."""

    store_digest, task_digests = "synthetic", {}

    def __init__(self, batch: dict):
        self.batch = batch

    def batches(self, start_step=None):
        while True:
            yield self.batch

    def validation_batches(self, num_batches: int) -> list:
        return []

    def task_name(self, task_id: int) -> str:
        return "synthetic"

    def realised_mixture(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        pass


def timed(step_fn, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="debug")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile per block in both loops")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    cfg = load_config("debug", [f'model.scale="{args.scale}"', "model.image_size=224", "model.num_image_tokens=196"])
    mcfg = dataclasses.replace(cfg.model)
    batch = synthetic_batch(mcfg, args.batch, args.seq, device)
    bf16 = device.type == "cuda"

    # bare: autocast, fused AdamW
    torch.manual_seed(0)
    bare = build_model(mcfg, vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD).to(device)
    flops_tok = bare.flops_per_token(args.seq)
    flops_img = bare.flops_per_image(train=True)
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-4, fused=bf16)

    def bare_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = bare(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    t_bare = timed(bare_step, args.steps, args.warmup, device)
    del bare, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # platform: FSDP2 + the Trainer's step math
    torch.manual_seed(0)
    model = build_model(mcfg, vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD).to(device)
    if args.compile:
        from medmix.train.fsdp import apply_compile
        apply_compile(model)
    apply_fsdp(model, device, bf16=bf16)
    optim = build_optimizer(model, cfg.train, fused=bf16)
    rows_batch = {**batch, "task_ids": torch.zeros(args.batch, dtype=torch.long),
                  "example_ids": [f"synthetic-{i}" for i in range(args.batch)]}
    trainer = Trainer(model, optim, FixedBatch(rows_batch), cfg.train, device=device)

    def platform_step():
        trainer.train_step(rows_batch)
    t_plat = timed(platform_step, args.steps, args.warmup, device)

    tokens = args.batch * args.seq
    flops = flops_tok * tokens + flops_img * args.batch
    peak = gpu_peak_flops(device) if device.type == "cuda" else 0.0
    rows = []
    for name, t in (("bare", t_bare), ("platform", t_plat)):
        mfu = f"{100 * flops / t / peak:.1f}%" if peak else "n/a (CPU)"
        rows.append(f"| {name} | {tokens / t:,.0f} | {args.batch / t:,.1f} | {mfu} |")
        print(f"{name:9s} {tokens / t:12,.0f} tok/s  {args.batch / t:8.1f} samples/s  MFU {mfu}")
    print(f"platform / bare = {t_bare / t_plat:.3f}x")
    dist.destroy_process_group()
    if args.no_record:
        return
    section = [f"## train step — {date.today().isoformat()}", f"- machine: {machine()}",
               f"`python benchmarks/train_step.py --scale {args.scale} --seq {args.seq} --batch {args.batch} "
               f"--steps {args.steps}{' --compile' if args.compile else ''}`", "",
               "| loop | tokens/s | samples/s | MFU |", "|---|---|---|---|", *rows,
               f"\nplatform / bare throughput: {t_bare / t_plat:.3f}x\n"]
    record("\n".join(section))


if __name__ == "__main__":
    main()
