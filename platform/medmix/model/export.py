"""Export a model as one safetensors file + `config.json`, and load it back — no pickle anywhere.

    save_exported(model, "out/", meta={"bos_id": tok.bos_id, "eos_id": tok.eos_id})
    model, meta = load_exported("out/")         # meta = config.json as a dict

`config.json` holds the ModelConfig, the vocabulary size and special ids, and the decoder's
own transformers config, so a decoder that came from a GGUF file or a Hugging Face directory
rebuilds without that file. `model.safetensors` holds every parameter and buffer — the
non-persistent ones too (rotary frequency tables), so loading does not depend on how a
transformers version recomputes them. Tied tensors (a decoder whose head shares the
embedding matrix) are stored once and re-tied on load.

Loading builds the architecture on the meta device and assigns the stored tensors, so it
never allocates (or randomly initialises) a second copy of the weights; `config.json` is read
(and checked) by `medmix.model.resolve.ExportMeta`. Only the model side lives here: the
tokenizer and checkpoint lineage are the export command's business.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medmix.config import from_dict, validate
from medmix.model.config import ModelConfig
from medmix.model.decoder import decoder_from_config
from medmix.model.export_meta import CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE, ExportMeta
from medmix.model.multimodal import MultimodalLM
from medmix.model.projector import build_projector
from medmix.model.vision import build_vision, is_hf_vision


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """{alias name: primary name} for parameters/buffers reachable under several names."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def save_exported(model, out_dir: str | os.PathLike, *, meta: dict[str, Any] | None = None,
                  state_dict: dict[str, torch.Tensor] | None = None,
                  dtype: torch.dtype | None = None) -> Path:
    """Write `model.safetensors` + `config.json` into `out_dir`; returns out_dir.

    Args:
        model: a MultimodalLM (unsharded; pass `state_dict` for a sharded one).
        meta: extra JSON-able facts stored under "meta" (tokenizer ids, digest, step, ...).
        state_dict: full tensors to write instead of `model.state_dict()` (e.g. gathered from
            FSDP on rank 0); non-persistent buffers still come from `model`.
        dtype: cast floating-point tensors (e.g. torch.bfloat16 for serving); default as is.
    """
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aliases = _tied_aliases(model)
    tensors: dict[str, torch.Tensor] = {}
    source = dict(state_dict) if state_dict is not None else model.state_dict()
    for name, buf in model.named_buffers():
        source.setdefault(name, buf)  # non-persistent buffers
    for name, t in source.items():
        if name in aliases:
            continue
        t = t.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.to("cpu").contiguous()
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    decoder = model.decoder
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(model.config),
        "vocab_size": int(decoder.get_input_embeddings().weight.shape[0]),
        "image_token_id": model.image_token_id,
        "pad_token_id": model.pad_token_id,
        "num_image_tokens": model.num_image_tokens,
        "decoder_config": decoder.config.to_dict(),
        # a Hugging Face tower's own config: the export rebuilds it without model.vision_path
        "vision_config": model.vision.tower.config.to_dict() if is_hf_vision(model.vision) else None,
        "params": model.num_params(),
        "tied": aliases,
        "dtype": str(dtype or next(iter(tensors.values())).dtype).removeprefix("torch."),
        "meta": meta or {},
    }
    tmp = out / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=1, default=str))
    os.replace(tmp, out / CONFIG_FILE)
    return out


def load_exported(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                  meta: ExportMeta | None = None):
    """(MultimodalLM in eval mode, config.json dict) from a `save_exported` directory.

    `meta` is the directory's `ExportMeta` when the caller has read it already.
    """
    from safetensors import safe_open

    meta = ExportMeta.read(path) if meta is None else meta
    cfg = from_dict(ModelConfig, meta.model, "model.")
    validate(cfg, "model.")
    arch = dataclasses.replace(cfg, vision_checkpoint="", decoder_path="")  # weights come from the file
    with torch.device("meta"):
        if cfg.vision_path and meta.vision_config is None:
            raise ValueError(f"{path}: the model has a Hugging Face tower (model.vision_path) but config.json "
                             f"holds no vision_config; export it again with this medmix")
        vision = build_vision(arch, load_pretrained=False, hf_config=meta.vision_config)
        decoder = decoder_from_config(meta.decoder_config)
        projector = build_projector(arch, vision_dim=vision.embed_dim, text_dim=decoder.config.hidden_size,
                                    grid_size=vision.grid_size)
        model = MultimodalLM(vision, projector, decoder, image_token_id=meta.image_token_id,
                             pad_token_id=meta.pad_token_id, num_image_tokens=meta.num_image_tokens,
                             freeze_vision=cfg.freeze_vision, config=cfg)
    weights = Path(path) / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt", device=str(device)) as f:
        for name in f.keys():
            _assign(model, name, f.get_tensor(name), weights)
    for alias, primary in meta.tied.items():
        _assign(model, alias, _lookup(model, primary), weights)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{weights}: no tensor for {left[:5]}{'...' if len(left) > 5 else ''}; "
                         f"the export is incomplete or from a different architecture")
    model.decoder.config.use_cache = False
    model.eval()
    return model, meta.config


def _lookup(model: nn.Module, name: str) -> torch.Tensor:
    mod, _, leaf = name.rpartition(".")
    sub = model.get_submodule(mod)
    return sub._parameters[leaf] if leaf in sub._parameters else sub._buffers[leaf]


def _assign(model: nn.Module, name: str, tensor: torch.Tensor, where: Path) -> None:
    mod, _, leaf = name.rpartition(".")
    try:
        sub = model.get_submodule(mod)
    except AttributeError:
        raise ValueError(f"{where}: tensor {name!r} has no place in this architecture") from None
    if leaf in sub._parameters:
        old = sub._parameters[leaf]
        if tuple(old.shape) != tuple(tensor.shape):
            raise ValueError(f"{where}: {name} has shape {tuple(tensor.shape)}, the architecture "
                             f"expects {tuple(old.shape)}")
        sub._parameters[leaf] = (tensor if isinstance(tensor, nn.Parameter)
                                 else nn.Parameter(tensor, requires_grad=old.requires_grad))
    elif leaf in sub._buffers:
        sub._buffers[leaf] = tensor
    else:
        raise ValueError(f"{where}: tensor {name!r} has no place in this architecture")
