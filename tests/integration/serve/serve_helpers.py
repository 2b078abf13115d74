"""Debug exports and a free port for the serve tests.

`make_export` writes what `medmix export` writes (model.safetensors + config.json with the
input meta, tokenizer.json, medmix.json lineage) for a debug-scale model with seeded random
weights and the suite's real tokenizer: a real export, minus the training steps (which the
CLI test covers), so a module can build two distinct versions in about a second.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_export(out: Path, cfg, seed: int = 0) -> Path:
    """A debug model with seed `seed`, exported to `out` the way export_checkpoint lays it out."""
    import torch

    from medmix.config import to_dict
    from medmix.data.tokenizer import load_tokenizer
    from medmix.model import build_model, save_exported
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    torch.manual_seed(seed)
    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id, pad_token_id=tok.pad_id)
    out = Path(out)
    save_exported(model.eval(), out, meta={
        "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "image_token_id": tok.image_token_id,
        "tokenizer_digest": tok.digest, "max_seq_len": cfg.stream.max_seq_len, "exemplar": cfg.stream.exemplar,
        "image_size": cfg.model.image_size, "num_image_tokens": cfg.model.num_image_tokens})
    tok.save(out / "tokenizer.json")
    (out / "medmix.json").write_text(json.dumps({
        "step": 0, "run_id": None, "checkpoint": f"random-init-seed-{seed}", "config": to_dict(cfg),
        "tokenizer_digest": tok.digest}, indent=1))
    return out


def serve_settings(cfg, **changes):
    """cfg with serve.* replaced (port, batching) for a test app."""
    cfg.serve = dataclasses.replace(cfg.serve, **changes)
    return cfg
