"""`medmix model info`: parameter counts per part and FLOPs per token, sized on the meta device.

    medmix model info --preset debug
    medmix model info --preset debug --set model.scale=base --ladder
    medmix model info --preset base --set train.trainable=projector+lora --world-size 16
"""

from __future__ import annotations

import argparse
import json

from medmix.cli import add_config_args, resolve_config
from medmix.commands.tasks import table


def add_parser(sub) -> None:
    p = sub.add_parser("model", help="inspect the model (info: parameter counts, FLOPs/token)",
                       description="Inspect the multimodal model the configuration describes.")
    msub = p.add_subparsers(dest="model_verb", metavar="<info>", required=True)
    i = msub.add_parser("info", help="parameters per part and FLOPs/token; --ladder for every scale",
                        description="Build the configured model on the meta device (no memory, no "
                                    "weights read) and print its parameter counts per part (vision, "
                                    "projector, decoder, total) and the training FLOPs per token used "
                                    "for MFU (6 N + 12 layers hidden seq), then the trainable and "
                                    "frozen parameters under train.trainable (LoRA adapters included) "
                                    "and the AdamW state each GPU holds when FSDP2 shards it over "
                                    "--world-size ranks. --ladder adds a table of every named scale.")
    add_config_args(i)
    i.add_argument("--ladder", action="store_true", help="also print the whole scale ladder")
    i.add_argument("--vocab-size", type=int, default=None,
                   help="tokenizer size to size the embeddings with (default: tokenizer.vocab_size)")
    i.add_argument("--seq-len", type=int, default=None,
                   help="sequence length for the attention FLOPs term (default: stream.max_seq_len)")
    i.add_argument("--world-size", type=int, default=None,
                   help="ranks FSDP2 shards optimizer state over (default: train.num_workers)")
    i.add_argument("--modules", action="store_true",
                   help="also list every parameter name (what train.trainable globs match)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=run_info)


def model_info(cfg, *, vocab_size: int | None = None, seq_len: int | None = None,
               with_ladder: bool = False, world_size: int | None = None) -> dict:
    """What `medmix model info` prints, as a dict (tests call this)."""
    from medmix.model.summary import describe, ladder, trainable_summary
    vocab = vocab_size or cfg.tokenizer.vocab_size
    if not vocab_size and cfg.model.decoder_path:
        # a pretrained decoder brings its own vocabulary (medmix adds <img>/<pad> to it)
        from medmix.model.decoder import load_decoder_config
        vocab = load_decoder_config(cfg.model.decoder_path).vocab_size
    seq = seq_len or cfg.stream.max_seq_len
    out = {"vocab_size": vocab, "seq_len": seq, "config": describe(cfg.model, vocab, seq),
           "trainable": trainable_summary(cfg.model, cfg.train.trainable, cfg.train.lora, vocab_size=vocab,
                                          world_size=world_size or cfg.train.num_workers)}
    if with_ladder:
        out["ladder"] = ladder(cfg.model, vocab, seq)
    return out


def run_info(args: argparse.Namespace) -> int:
    from medmix.model.summary import human
    cfg = resolve_config(args)
    if args.world_size is not None and args.world_size < 1:
        raise SystemExit(f"--world-size must be at least 1, got {args.world_size}")
    info = model_info(cfg, vocab_size=args.vocab_size, seq_len=args.seq_len, with_ladder=args.ladder,
                      world_size=args.world_size)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    d = info["config"]
    print(f"vision:   {d['vision_scale']:<10} {d['vision_shape']}")
    print(f"decoder:  {d['language_scale']:<10} {d['decoder_shape']}")
    print(f"image:    {cfg.model.num_image_tokens} tokens per image, projector {cfg.model.projector}"
          f"{', vision frozen' if cfg.model.freeze_vision else ''}\n")
    rows = [[part, f"{n:,}", human(n)] for part, n in d["params"].items()]
    print(table(rows, ["part", "parameters", ""]))
    print(f"\ntraining FLOPs per token at seq {d['seq_len']}: {human(d['flops_per_token'])} "
          f"(6N + 12 L H T, decoder); + {human(d['flops_per_image'])} per image (ViT + projector); "
          f"one image per sequence: {human(d['flops_per_token_1img'])}/token")
    t = info["trainable"]
    lora = f", {t['lora_modules']} LoRA layers (r {cfg.train.lora.rank})" if t["lora_modules"] else ""
    print(f"\ntrain.trainable = {cfg.train.trainable}: {t['trainable']:,} trainable ({human(t['trainable'])}), "
          f"{t['frozen']:,} frozen ({human(t['frozen'])}){lora}")
    rows = [[part, human(v["trainable"]), human(v["frozen"])] for part, v in t["per_part"].items()]
    print(table(rows, ["part", "trainable", "frozen"]))
    print(f"per GPU at world size {t['world_size']} (FSDP2-sharded): AdamW state "
          f"{human(t['optimizer_bytes_per_gpu'])}B, gradients {human(t['grad_bytes_per_gpu'])}B, "
          f"fp32 weights {human(t['param_bytes_per_gpu'])}B")
    if args.modules:
        from medmix.model.summary import parameter_names
        print("\nparameters (name, shape):")
        for name, shape in parameter_names(cfg.model, info["vocab_size"], cfg.train.trainable, cfg.train.lora):
            print(f"  {name}  {list(shape)}")
    if args.ladder:
        rows = [[r["scale"], human(r["params"]["vision"]), human(r["params"]["projector"]),
                 human(r["params"]["decoder"]), human(r["params"]["total"]), r["decoder_shape"],
                 human(r["flops_per_token"])] for r in info["ladder"]]
        print(f"\nscale ladder (vocab {info['vocab_size']}, image {cfg.model.image_size}px, {cfg.model.num_image_tokens} image tokens):")
        print(table(rows, ["scale", "vision", "projector", "decoder", "total", "decoder shape",
                           f"FLOPs/token@{d['seq_len']}"]))
    return 0
