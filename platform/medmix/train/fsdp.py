"""Parallelism applied *outside* the model: FSDP2, activation checkpointing, torch.compile.

The only place in medmix that calls `fully_shard`. Each ViT block and each decoder layer
becomes one FSDP unit (its parameters are gathered just before it runs and freed after),
then the root wraps whatever is left (patch embedding, projector, token embeddings, head).
On GPU parameters compute in bf16 with fp32 gradient reduction; on CPU everything is fp32
over gloo, which keeps CPU runs bit-for-bit deterministic (the resume tests rely on it).
"""

from __future__ import annotations

import torch
from torch import nn

# class names of the repeated blocks: timm ViT blocks, HF vision towers' encoder layers
# (SiglipEncoderLayer, CLIPEncoderLayer), HF decoder layers
BLOCK_SUFFIXES = ("Block", "EncoderLayer", "DecoderLayer")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of the vision encoder and the decoder, in forward order."""
    blocks: list[nn.Module] = []
    for module in model.modules():
        name = type(module).__name__
        if module is model or not name.endswith(BLOCK_SUFFIXES):
            continue
        if any(module in b.modules() for b in blocks):  # nested (a block inside a block)
            continue
        blocks.append(module)
    return blocks


def apply_ac(model: nn.Module) -> int:
    """Recompute each block's activations in backward instead of keeping them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)
    blocks = set(transformer_blocks(model))
    apply_activation_checkpointing(
        model, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: m in blocks)
    return len(blocks)


def apply_compile(model: nn.Module) -> int:
    """torch.compile each block separately: fast to compile, composes with FSDP2."""
    blocks = transformer_blocks(model)
    for block in blocks:
        block.compile()
    return len(blocks)


def apply_fsdp(model: nn.Module, device: torch.device, *, bf16: bool) -> int:
    """fully_shard every block, then the root. Returns the number of FSDP units."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    import torch.distributed as dist

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if bf16 else MixedPrecisionPolicy())
    blocks = transformer_blocks(model)
    for i, block in enumerate(blocks):
        # the last block's parameters are needed first in backward: keep them gathered
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return len(blocks) + 1
