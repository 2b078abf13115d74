"""`medmix export`: turn a training checkpoint into a servable, registered model version."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from medmix.config import config_from_dict
from medmix.lineage.registry import set_alias
from medmix.model.export_meta import CONFIG_FILE, EXPORT_FORMATS, HF_ADAPTER_FORMAT, format_name
from medmix.model.resolve import checkpoint_label, slug
from medmix.storage import check_reachable, is_uri, location, upload


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="checkpoint -> safetensors + config + tokenizer, registered in MLflow",
        description="Read a DCP training checkpoint (a step-NNNNNN directory), write one "
                    "safetensors file + config.json + tokenizer.json + medmix.json (lineage) to "
                    "--out, and register it as a new version of the MLflow model `medmix` "
                    "(tags: run, checkpoint, step, store digest). Nothing is pickled.")
    p.add_argument("checkpoint", help="checkpoint directory (…/<run>/step-NNNNNN) or a run directory (its latest); "
                                      "a local path or an s3:// URI")
    p.add_argument("--out", help="export directory or s3:// URI (default: <lineage.root>/exports/<run>-step<N>); "
                                 "on object storage config.json is written last, so a reader sees the whole "
                                 "export or none")
    p.add_argument("--format", dest="fmt", choices=EXPORT_FORMATS, default="medmix",
                   help="medmix (default): medmix's own files, for every model; medmix serve and evaluate "
                        "read them. hf: a directory plain transformers loads as LlavaForConditionalGeneration "
                        "+ AutoProcessor (LoRA merged into the weights). hf-adapter: only the LoRA adapters "
                        "(and full copies of modules that trained without one, e.g. the projector) for "
                        "peft's PeftModel.from_pretrained on the base the run started from (--base). The "
                        "hf formats need parts LLaVA has: a Hugging Face CLIP or SigLIP tower "
                        "(model.vision_path or model.llava_path; not a timm tower), model.projector = llava "
                        "with one image token per patch (not medmix's linear/mlp projector or pooled "
                        "tokens), and a Llama, Mistral, Qwen2/3 or Gemma decoder (from a directory, a GGUF "
                        "file or a scale); any other combination fails naming the part before anything is "
                        "written: export it in the medmix format")
    p.add_argument("--base", default=None, metavar="DIR",
                   help="with --format hf-adapter: the LlavaForConditionalGeneration directory the run "
                        "started from (default: the run's model.llava_path); every tensor the run kept "
                        "frozen must equal the base's")
    p.add_argument("--bf16", action="store_true", help="store weights in bfloat16 (half the size)")
    p.add_argument("--no-register", action="store_true", help="write the files only")
    p.add_argument("--alias", default=None, metavar="NAME",
                   help="also point the registry alias NAME (e.g. champion) at the new version, so "
                        "`medmix serve --model medmix@NAME` serves it")
    p.add_argument("--tracking-root", default=None,
                   help="lineage root holding the MLflow store (default: the checkpoint's own config)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from medmix.train.checkpoint import latest_checkpoint, read_meta
    from medmix.train.export import export_checkpoint, register_checkpoint_export

    if args.base and args.fmt != HF_ADAPTER_FORMAT:
        raise ValueError("--base names the Hugging Face model an adapter applies to: use it with --format hf-adapter")
    if args.alias and args.no_register:
        raise ValueError("--alias points an alias at the version this export registers: drop --no-register")
    ckpt = latest_checkpoint(args.checkpoint)   # a local folder or an s3:// URI
    meta = read_meta(ckpt)
    cfg = config_from_dict(meta["config"])
    if args.tracking_root:
        cfg.lineage.root = args.tracking_root
    # where `medmix serve --model CHECKPOINT` looks for (and reuses) this checkpoint's export
    label = slug(checkpoint_label(Path(ckpt), meta))
    if args.fmt != "medmix":
        label = f"{label}-{args.fmt}"  # beside the medmix export `serve --model CHECKPOINT` reuses
    dest = args.out or location(cfg.lineage.root).join("exports", label).uri
    if is_uri(dest):
        check_reachable(dest)   # endpoint, credentials, bucket: before the export is built
    with tempfile.TemporaryDirectory(prefix="medmix-export-") as scratch:
        out = Path(scratch) / label if is_uri(dest) else Path(dest)
        export_checkpoint(ckpt, out, dtype=torch.bfloat16 if args.bf16 else None, fmt=args.fmt, base=args.base)
        if is_uri(dest):
            # config.json last: a reader sees a whole export (config + weights) or none
            upload(out, location(dest), last=(CONFIG_FILE,))
        print(f"exported {ckpt} -> {dest}")
        if not args.no_register:
            version = register_checkpoint_export(cfg.lineage, ckpt, out, fmt=args.fmt)
            if version:
                print(f"registered {cfg.lineage.registered_model}/{version} ({format_name(args.fmt)})  "
                      f"(lineage: medmix lineage {cfg.lineage.registered_model}/{version})")
                if args.alias:
                    set_alias(cfg.lineage, cfg.lineage.registered_model, args.alias, version)
                    print(f"{cfg.lineage.registered_model}@{args.alias} -> version {version}")
    return 0
