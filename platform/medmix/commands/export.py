"""`medmix export`: turn a training checkpoint into a servable, registered model version."""

from __future__ import annotations

import argparse
from pathlib import Path

from medmix.config import config_from_dict
from medmix.model.resolve import checkpoint_label, slug


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="checkpoint -> safetensors + config + tokenizer, registered in MLflow",
        description="Read a DCP training checkpoint (a step-NNNNNN directory), write one "
                    "safetensors file + config.json + tokenizer.json + medmix.json (lineage) to "
                    "--out, and register it as a new version of the MLflow model `medmix` "
                    "(tags: run, checkpoint, step, store digest). Nothing is pickled.")
    p.add_argument("checkpoint", help="checkpoint directory (…/<run>/step-NNNNNN) or a run directory (its latest)")
    p.add_argument("--out", help="export directory (default: <lineage.root>/exports/<run>-step<N>)")
    p.add_argument("--bf16", action="store_true", help="store weights in bfloat16 (half the size)")
    p.add_argument("--no-register", action="store_true", help="write the files only")
    p.add_argument("--tracking-root", default=None,
                   help="lineage root holding the MLflow store (default: the checkpoint's own config)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from medmix.train.checkpoint import latest_checkpoint, read_meta
    from medmix.train.export import export_checkpoint, register_checkpoint_export

    ckpt = latest_checkpoint(Path(args.checkpoint))
    meta = read_meta(ckpt)
    cfg = config_from_dict(meta["config"])
    if args.tracking_root:
        cfg.lineage.root = args.tracking_root
    # where `medmix serve --model CHECKPOINT` looks for (and reuses) this checkpoint's export
    out = Path(args.out) if args.out else Path(cfg.lineage.root) / "exports" / slug(checkpoint_label(ckpt, meta))
    export_checkpoint(ckpt, out, dtype=torch.bfloat16 if args.bf16 else None)
    print(f"exported {ckpt} -> {out}")
    if not args.no_register:
        version = register_checkpoint_export(cfg.lineage, ckpt, out)
        if version:
            print(f"registered {cfg.lineage.registered_model}/{version}  "
                  f"(lineage: medmix lineage {cfg.lineage.registered_model}/{version})")
    return 0
