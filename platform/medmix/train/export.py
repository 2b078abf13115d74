"""`medmix export`: a DCP training checkpoint -> one safetensors file + config + tokenizer.

    out = export_checkpoint("medmix-runs/checkpoints/debug/step-000020", "medmix-runs/exports/debug-20")
    version = register_checkpoint_export(cfg.lineage, ckpt, out)     # model `medmix`, version N

The checkpoint's `medmix.json` carries the resolved config, so the model is rebuilt exactly
as trained (random init is fine: every tensor is then overwritten from the DCP shards, read
in this single process without a process group — DCP reshards to "one rank"). The export
holds `model.safetensors`, `config.json` (model config + special ids), `tokenizer.json` and
`medmix.json` (the checkpoint's lineage: run id, step, digests, data state). Serving and
evaluation load it without unpickling anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medmix.config import config_from_dict
from medmix.data.tokenizer import load_tokenizer
from medmix.lineage.registry import TAG_CHECKPOINT, TAG_STEP, TAG_STORE_DIGEST, register_export
from medmix.model import build_model, save_exported
from medmix.model.export_meta import LINEAGE_FILE, TOKENIZER_FILE
from medmix.model.preprocess import image_preprocess
from medmix.model.trainable import apply_lora_structure, merge_lora
from medmix.train.checkpoint import dcp_load, read_meta
from medmix.storage import local_copy, normalize

if TYPE_CHECKING:
    from medmix.lineage.config import TrackerConfig


def load_checkpoint_model(checkpoint: str | Path):
    """(model with the checkpoint's weights on CPU, fp32; the checkpoint's config; tokenizer).
    An `s3://` checkpoint is downloaded to a temporary folder for the read."""

    with local_copy(checkpoint) as local:
        return _load_checkpoint_model(local)


def _load_checkpoint_model(checkpoint: Path):
    meta = read_meta(checkpoint)
    cfg = config_from_dict(meta["config"])
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id,
                        pad_token_id=tok.pad_id)
    apply_lora_structure(model, cfg.train.trainable, cfg.train.lora)  # the adapters the run trained
    state = {"model": model.state_dict()}
    dcp_load(state, checkpoint)
    model.load_state_dict(state["model"], strict=True)
    merge_lora(model)  # an export has the plain architecture: adapters folded into the weights
    model.eval()
    return model, cfg, tok


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write the export directory for `checkpoint` (a local folder or an `s3://` URI); returns it."""

    source = normalize(checkpoint)
    out_dir = Path(out_dir)
    meta = read_meta(source)
    model, cfg, tok = load_checkpoint_model(source)
    prep = image_preprocess(cfg.model)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_exported(model, tmp, dtype=dtype, meta={
        "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
        "image_token_id": tok.image_token_id, "tokenizer_digest": tok.digest,
        "max_seq_len": cfg.stream.max_seq_len, "exemplar": cfg.stream.exemplar,
        "image_size": cfg.model.image_size, "num_image_tokens": cfg.model.num_image_tokens,
        # the tower's normalisation, which evaluation and serving apply as training did
        "image_mean": list(prep.mean), "image_std": list(prep.std),
    })
    tok.save(tmp / TOKENIZER_FILE)
    lineage = {k: meta.get(k) for k in ("step", "run_id", "store_digest", "task_digests",
                                       "tokenizer_digest", "parent_checkpoint", "metrics", "data_state")}
    lineage["checkpoint"] = source
    lineage["config"] = meta["config"]
    (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=1, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # an export directory is either complete or absent
    return out_dir


def register_checkpoint_export(tracker_cfg: TrackerConfig, checkpoint: str | Path, export_dir: str | Path,
                               tags: dict | None = None, name: str | None = None) -> str | None:
    """Register the export as a new version of the model registry; returns the version."""

    meta = read_meta(checkpoint)
    if not tracker_cfg.enabled or not meta.get("run_id"):
        return None
    return register_export(tracker_cfg, export_dir, meta["run_id"], tags={
        TAG_CHECKPOINT: normalize(checkpoint), TAG_STEP: meta["step"],
        TAG_STORE_DIGEST: meta.get("store_digest", ""), **(tags or {})}, name=name)
