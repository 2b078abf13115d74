"""Warm start: a new model's weights from an export directory (`train.init_from`).

    check_init_weights(model, export_dir)    # names and shapes only (works on the meta device)
    load_init_weights(model, export_dir)     # copy every tensor in; returns how many

The launcher resolves `train.init_from` (a registry version, an export directory, a checkpoint
or a run directory) to a local export with `medmix.model.resolve.resolve`, then checks names
and shapes against the model built on the meta device, before any worker starts. Each worker
then copies the tensors into its freshly built model before LoRA, FSDP and the optimizer, so
the run starts at step 0 with a new optimizer from exactly the parent's weights. An export
holds the plain architecture (LoRA merged), which is what the model has before
`train.trainable` adds adapters. A tensor the model has and the export lacks (or the other way
round), or one of another shape, is a ValueError naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from medmix.model.export_meta import WEIGHTS_FILE, ExportMeta


def _plan(model: nn.Module, export_dir: Path) -> dict[str, str]:
    """{model tensor name: stored tensor name}, after checking names and shapes."""
    from safetensors import safe_open
    meta = ExportMeta.read(export_dir)
    weights = export_dir / WEIGHTS_FILE
    own = model.state_dict()
    buffers = {n for n, _ in model.named_buffers()}
    plan: dict[str, str] = {}
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for name, tensor in own.items():
        source = meta.tied.get(name, name)
        if source not in stored:
            raise ValueError(f"train.init_from {export_dir}: has no tensor {name!r}, which this model has; "
                             f"the export was trained with another model.* configuration")
        if stored[source] != tuple(tensor.shape):
            raise ValueError(f"train.init_from {export_dir}: {name} has shape {stored[source]}, this model "
                             f"expects {tuple(tensor.shape)}; set the model.* keys (scale, image_size, "
                             f"num_image_tokens, projector, tokenizer) the parent was trained with")
        plan[name] = source
    extra = sorted(set(stored) - set(plan.values()) - buffers)
    if extra:
        raise ValueError(f"train.init_from {export_dir}: tensor {extra[0]!r} has no place in this model"
                         f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}; the export was "
                         f"trained with another model.* configuration")
    return plan


def check_init_weights(model: nn.Module, export_dir: str | os.PathLike) -> int:
    """Check that the export's tensors fit `model` by name and shape; returns how many."""
    return len(_plan(model, Path(export_dir)))


@torch.no_grad()
def load_init_weights(model: nn.Module, export_dir: str | os.PathLike) -> int:
    """Copy the export's tensors into `model` (in place, dtype converted); returns how many."""
    from safetensors import safe_open
    export_dir = Path(export_dir)
    plan = _plan(model, export_dir)
    own = model.state_dict()
    with safe_open(str(export_dir / WEIGHTS_FILE), framework="pt", device="cpu") as f:
        for name, source in plan.items():
            own[name].copy_(f.get_tensor(source))
    return len(plan)
