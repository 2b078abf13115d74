"""`medmix export`: a DCP training checkpoint -> one safetensors file + config + tokenizer.

    out = export_checkpoint("medmix-runs/checkpoints/debug/step-000020", "medmix-runs/exports/debug-20")
    version = register_checkpoint_export(cfg.lineage, ckpt, out)     # model `medmix`, version N

`fmt="hf"` writes a LlavaForConditionalGeneration directory instead and `fmt="hf-adapter"`
the run's LoRA adapters for peft (medmix.model.hf_export); the registry tags each version with
its format (`medmix.format`).

The checkpoint's `medmix.json` carries the resolved config, so the model is rebuilt exactly
as trained (random init is fine: every tensor is then overwritten from the DCP shards, read
in this single process without a process group — DCP reshards to "one rank"). The export
holds `model.safetensors`, `config.json` (model config + special ids), `tokenizer.json` and
`medmix.json` (the checkpoint's lineage: run id, step, digests, data state), with
`tokenizer_config.json` naming the tokenizer's BOS, EOS and image tokens. Serving and
evaluation load it without unpickling anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer

from medmix.config import config_from_dict
from medmix.data.tokenizer import load_tokenizer
from medmix.lineage.registry import TAG_CHECKPOINT, TAG_FORMAT, TAG_STEP, TAG_STORE_DIGEST, register_export
from medmix.model import build_model, save_exported
from medmix.model.export_meta import (EXPORT_FORMATS, HF_ADAPTER_FORMAT, HF_FORMAT, LINEAGE_FILE, TOKENIZER_FILE,
                                      format_name)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
from medmix.model.hf_export import HFExportError, hf_plan, save_hf, save_hf_adapter
from medmix.model.preprocess import image_preprocess
from medmix.model.trainable import apply_lora_structure, merge_lora, select_trainable
from medmix.train.checkpoint import dcp_load, read_meta
from medmix.storage import local_copy, normalize

if TYPE_CHECKING:
    from medmix.lineage.config import TrackerConfig


def load_checkpoint_model(checkpoint: str | Path, *, merge: bool = True):
    """(model with the checkpoint's weights on CPU, fp32; the checkpoint's config; tokenizer).
    An `s3://` checkpoint is downloaded to a temporary folder for the read.

    Args:
        merge: fold LoRA adapters into the weights (the plain architecture); False keeps them,
            with `requires_grad` set as the run trained (what an adapter export needs)."""

    with local_copy(checkpoint) as local:
        return _load_checkpoint_model(local, merge)


def _load_checkpoint_model(checkpoint: Path, merge: bool = True):
    meta = read_meta(checkpoint)
    cfg = config_from_dict(meta["config"])
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id,
                        pad_token_id=tok.pad_id)
    apply_lora_structure(model, cfg.train.trainable, cfg.train.lora)  # the adapters the run trained
    state = {"model": model.state_dict()}
    dcp_load(state, checkpoint)
    model.load_state_dict(state["model"], strict=True)
    if merge:
        merge_lora(model)  # an export has the plain architecture: adapters folded into the weights
    else:
        select_trainable(model, cfg.train.trainable)
    model.eval()
    return model, cfg, tok


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, dtype: torch.dtype | None = None,
                      fmt: str = "medmix", base: str | Path | None = None) -> Path:
    """Write the export directory for `checkpoint` (a local folder or an `s3://` URI); returns it.

    Args:
        fmt: one of EXPORT_FORMATS: medmix's own (`medmix-model`, any model), `hf` (a
            LlavaForConditionalGeneration directory, LoRA merged) or `hf-adapter` (the LoRA
            adapters for peft on `base`); see medmix.model.hf_export for what maps.
        base: for `hf-adapter`, the Hugging Face LLaVA directory the run started from
            (default: the run's model.llava_path).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    source = normalize(checkpoint)
    out_dir = Path(out_dir)
    meta = read_meta(source)
    if fmt == HF_ADAPTER_FORMAT:
        base = base or config_from_dict(meta["config"]).model.llava_path
        if not base:
            raise HFExportError("--format hf-adapter needs the Hugging Face model the run started from: the run "
                                "has no model.llava_path; pass --base DIR (a LlavaForConditionalGeneration directory)")
    model, cfg, tok = load_checkpoint_model(source, merge=fmt != HF_ADAPTER_FORMAT)
    if fmt != "medmix":
        hf_plan(model)  # a part that cannot map fails here, before anything is written
    prep = image_preprocess(cfg.model)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write(fmt, model, cfg, tok, prep, tmp, dtype=dtype, base=base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lineage = {k: meta.get(k) for k in ("step", "run_id", "store_digest", "task_digests", "tasks",
                                       "tokenizer_digest", "parent_checkpoint", "metrics", "data_state")}
    lineage["checkpoint"] = source
    lineage["config"] = meta["config"]
    lineage["format"] = format_name(fmt)
    (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=1, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # an export directory is either complete or absent
    return out_dir


def _write(fmt: str, model, cfg, tok, prep, out: Path, *, dtype: torch.dtype | None, base) -> None:
    if fmt == HF_FORMAT:
        save_hf(model, out, tok, prep, dtype=dtype)
        return
    if fmt == HF_ADAPTER_FORMAT:
        save_hf_adapter(model, out, base, tok, prep, cfg.train.lora)
        return
    save_exported(model, out, dtype=dtype, meta={
        "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
        "image_token_id": tok.image_token_id, "tokenizer_digest": tok.digest,
        "max_seq_len": cfg.stream.max_seq_len, "exemplar": cfg.stream.exemplar,
        "image_size": cfg.model.image_size, "num_image_tokens": cfg.model.num_image_tokens,
        # the tower's normalisation, which evaluation and serving apply as training did
        "image_mean": list(prep.mean), "image_std": list(prep.std),
    })
    tok.save(out / TOKENIZER_FILE)
    # the token names, which tokenizer.json alone does not say: a LLaVA's image token is `<image>`,
    # and loading the export without it would add medmix's `<img>` as a new id
    image = Tokenizer.from_str(tok.to_str()).id_to_token(tok.image_token_id)
    (out / TOKENIZER_CONFIG_FILE).write_text(json.dumps(
        {"bos_token": tok.bos_token, "eos_token": tok.eos_token, "image_token": image}, indent=1))


def register_checkpoint_export(tracker_cfg: TrackerConfig, checkpoint: str | Path, export_dir: str | Path,
                               tags: dict | None = None, name: str | None = None, fmt: str = "medmix") -> str | None:
    """Register the export (of `--format` fmt) as a new version of the model registry; returns the version."""

    meta = read_meta(checkpoint)
    if not tracker_cfg.enabled or not meta.get("run_id"):
        return None
    return register_export(tracker_cfg, export_dir, meta["run_id"], tags={
        TAG_CHECKPOINT: normalize(checkpoint), TAG_STEP: meta["step"],
        TAG_STORE_DIGEST: meta.get("store_digest", ""), TAG_FORMAT: format_name(fmt), **(tags or {})}, name=name)
